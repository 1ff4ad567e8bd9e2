"""Reading order that follows the page: rows kept together on a tilted page, columns read one after the other.

Lines are first seen in the page's own frame: the median slant of the wide lines is turned away,
so a receipt photographed a little crooked still pairs each item with its amount. Then the page is
searched for a gutter: a vertical strip of white with prose on both sides, side by side. A page
with one is read column by column (each column in turn searched again), lines crossing the gutter
(a title over both columns) where they stand; a page without one is read row by row, left to right.

Chat captures have no gutter by this rule (the two sides' bubbles never share a row), and neither
do receipts and forms (one side holds short cells, not prose), so both keep row order.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ocr_core.job import Line

__all__ = ["page_order", "slant"]

# Below this slant (degrees) a page counts as straight and keeps the coordinates it has.
_STRAIGHT = 0.5
# A gutter is at least this many line heights wide ...
_MIN_GUTTER = 0.6
# ... crossed by at most this share of the lines (titles, headings over both columns) ...
_MAX_CROSSING = 0.25
# ... with prose on each side: lines this many times as wide as they are tall, at the median.
_PROSE = 6.0
# ... that mostly run up to the gutter: the left side's lines end, at the 75th centile, within this
# share of the column's width from it (a table's left cells end anywhere).
_RAGGED = 0.35
# ... and sit side by side: at least this share of the shorter side's lines share height with a
# line across the gutter.
_SIDE_BY_SIDE = 0.5
_MIN_LINES = 3


@dataclass(frozen=True)
class _Placed:
    """A line with its extent in the page's frame (slant turned away)."""

    line: Line
    left: float
    top: float
    right: float
    bottom: float

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2


def page_order(lines: Iterable[Line]) -> list[Line]:
    """`lines` in the order a person reads the page: by column where it has columns, else row by row."""
    placed = _straightened(list(lines))
    return [item.line for item in _ordered(placed)]


def slant(lines: Sequence[Line]) -> float:
    """The page's slant in degrees (clockwise positive): the median angle of its wide lines' top edges."""
    angles = []
    for line in lines:
        (x0, y0), (x1, y1) = line.box[0], line.box[1]
        edge = math.hypot(x1 - x0, y1 - y0)
        side = math.hypot(line.box[3][0] - x0, line.box[3][1] - y0)
        if edge > 2 * side > 0:
            angles.append(math.degrees(math.atan2(y1 - y0, x1 - x0)))
    return statistics.median(angles) if angles else 0.0


def _straightened(lines: list[Line]) -> list[_Placed]:
    angle = slant(lines)
    if abs(angle) < _STRAIGHT:
        return [_Placed(line, line.left, line.top, line.right, line.bottom) for line in lines]
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    placed = []
    for line in lines:
        # Turn each corner back by the page's slant, about the page's origin.
        xs = [x * cos + y * sin for x, y in line.box]
        ys = [y * cos - x * sin for x, y in line.box]
        placed.append(_Placed(line, min(xs), min(ys), max(xs), max(ys)))
    return placed


def _ordered(items: list[_Placed]) -> list[_Placed]:
    split = _columns(items)
    if split is None:
        return _rows(items)
    left, right, crossing = split
    # Lines crossing the gutter stand between runs of columns: each run is read left column first.
    ordered: list[_Placed] = []
    pending_left: list[_Placed] = []
    pending_right: list[_Placed] = []
    on_left = {id(item) for item in left}
    on_gutter = {id(item) for item in crossing}
    for item in sorted(items, key=lambda item: (item.middle, item.left)):
        if id(item) in on_gutter:
            ordered += _ordered(pending_left) + _ordered(pending_right) + [item]
            pending_left, pending_right = [], []
        elif id(item) in on_left:
            pending_left.append(item)
        else:
            pending_right.append(item)
    return ordered + _ordered(pending_left) + _ordered(pending_right)


def _rows(items: list[_Placed]) -> list[_Placed]:
    """Top to bottom; lines sharing a row (overlapping by over half the shorter height) left to right."""
    rows: list[list[_Placed]] = []
    for item in sorted(items, key=lambda item: (item.middle, item.left)):
        if rows and _same_row(rows[-1][0], item):
            rows[-1].append(item)
        else:
            rows.append([item])
    return [item for row in rows for item in sorted(row, key=lambda item: item.left)]


def _columns(items: list[_Placed]) -> tuple[list[_Placed], list[_Placed], list[_Placed]] | None:
    """The left side, right side and crossing lines of the page's best gutter, or None without one."""
    if len(items) < 2 * _MIN_LINES:
        return None
    height = statistics.median(item.height for item in items)
    best: tuple[int, tuple[list[_Placed], list[_Placed], list[_Placed]]] | None = None
    for start, end in _gaps(items, allowed=int(len(items) * _MAX_CROSSING)):
        if end - start < _MIN_GUTTER * height:
            continue
        left = [item for item in items if item.right <= start]
        right = [item for item in items if item.left >= end]
        crossing = [item for item in items if item.right > start and item.left < end]
        paired = _side_by_side(left, right)
        if paired and _is_prose(left, start) and _is_prose(right, None) and (best is None or paired > best[0]):
            best = (paired, (left, right, crossing))
    return None if best is None else best[1]


def _gaps(items: list[_Placed], *, allowed: int) -> list[tuple[float, float]]:
    """X-ranges strictly inside the page's text crossed by at most `allowed` lines: of each stretch
    that thin, the widest part crossed by the fewest (a column's ragged ends are crossed by some of
    its lines, the gutter by none but the titles)."""
    edges = sorted({x for item in items for x in (item.left, item.right)})
    runs: list[list[tuple[float, float, int]]] = []
    for a, b in zip(edges, edges[1:]):
        middle = (a + b) / 2
        crossing = sum(1 for item in items if item.left < middle < item.right)
        if crossing > allowed:
            continue
        if runs and runs[-1][-1][1] == a:
            runs[-1].append((a, b, crossing))
        else:
            runs.append([(a, b, crossing)])
    gaps = []
    for run in runs:
        fewest = min(crossing for _, _, crossing in run)
        stretches: list[tuple[float, float]] = []
        for a, b, crossing in run:
            if crossing != fewest:
                continue
            if stretches and stretches[-1][1] == a:
                stretches[-1] = (stretches[-1][0], b)
            else:
                stretches.append((a, b))
        gaps.append(max(stretches, key=lambda stretch: stretch[1] - stretch[0]))
    low, high = edges[0], edges[-1]
    return [(a, b) for a, b in gaps if a > low and b < high]


def _side_by_side(left: list[_Placed], right: list[_Placed]) -> int:
    """How many lines of the shorter side share height with a line across the gutter; 0 when too few."""
    if len(left) < _MIN_LINES or len(right) < _MIN_LINES:
        return 0
    fewer, more = (left, right) if len(left) <= len(right) else (right, left)
    paired = sum(1 for a in fewer if any(min(a.bottom, b.bottom) > max(a.top, b.top) for b in more))
    return paired if paired >= _SIDE_BY_SIDE * len(fewer) else 0


def _is_prose(side: list[_Placed], gutter: float | None) -> bool:
    """Lines of running text: wide for their height and, left of a gutter, reaching close to it."""
    if statistics.median(item.width / max(item.height, 1.0) for item in side) < _PROSE:
        return False
    if gutter is None:
        return True
    reach = max(item.right for item in side) - min(item.left for item in side)
    shortfalls = sorted(gutter - item.right for item in side)
    return shortfalls[(3 * len(shortfalls)) // 4] <= _RAGGED * reach if len(shortfalls) > 1 else True


def _same_row(a: _Placed, b: _Placed) -> bool:
    shared = min(a.bottom, b.bottom) - max(a.top, b.top)
    return shared > 0.5 * min(a.height, b.height)
