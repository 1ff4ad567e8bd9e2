"""Reading images larger than one engine pass: overlapping tiles at full resolution, merged back into one page.

Rows are cut across the text, so a line is always whole in some row tile and an ownership rule
picks exactly one copy. Columns cut through lines, so the fragments on either side of a column
seam are joined back into one line. Columns appear only for images wider than `max_side`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from PIL import Image

from ocr_core.job import Line
from ocr_core.layout import page_order as reading_order  # tiles' lines leave in the page's reading order

__all__ = ["MAX_SIDE", "Recognise", "Tile", "plan_tiles", "read_tiled", "reading_order"]

Recognise = Callable[[Image.Image], list[Line]]

# The widest tile the engine reads unshrunk (RapidOCR's limit); only wider images get columns.
MAX_SIDE = 2400


@dataclass(frozen=True)
class Tile:
    """One crop of the page, in page pixels; `right` and `bottom` are exclusive."""

    row: int
    col: int
    left: int
    top: int
    right: int
    bottom: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)


def plan_tiles(width: int, height: int, *, tile_size: int, overlap: int, max_side: int = MAX_SIDE) -> list[list[Tile]]:
    """Rows of tiles covering a `width`×`height` page, each neighbour sharing at least `overlap` pixels.

    Rows are `tile_size` tall and as wide as the page; only a page wider than `max_side` is also
    cut into columns of `tile_size`, and then rows stay whole up to `max_side` tall.
    """
    if not 0 < overlap * 2 <= tile_size:
        raise ValueError(f"tile overlap {overlap} must be positive and at most half the tile size {tile_size}")
    if max_side < tile_size:
        raise ValueError(f"max_side {max_side} must be at least the tile size {tile_size}")
    columns = _spans(width, tile_size, overlap) if width > max_side else [(0, width)]
    row_limit = max_side if len(columns) > 1 else tile_size
    rows = _spans(height, tile_size, overlap) if height > row_limit else [(0, height)]
    return [
        [Tile(r, c, left, top, right, bottom) for c, (left, right) in enumerate(columns)]
        for r, (top, bottom) in enumerate(rows)
    ]


def read_tiled(
    image: Image.Image,
    recognise: Recognise,
    *,
    tile_size: int,
    overlap: int,
    max_side: int = MAX_SIDE,
    known: Mapping[tuple[int, int, int, int], list[Line]] | None = None,
) -> list[Line]:
    """Read `image` tile by tile with `recognise` and return its lines in page coordinates and reading order.

    An image that fits one tile goes to `recognise` whole. `overlap` must exceed the tallest
    text line, or a line cut by a row seam is whole in neither tile. `known` holds tiles already
    read, by box, in tile coordinates (the first tile, read while finding which way up the page is).
    """
    known = known or {}
    rows = plan_tiles(image.width, image.height, tile_size=tile_size, overlap=overlap, max_side=max_side)

    whole = len(rows) == 1 and len(rows[0]) == 1

    def read(tile: Tile) -> list[Line]:
        if tile.box in known:
            return known[tile.box]
        return recognise(image if whole else image.crop(tile.box))

    if whole:
        return reading_order(read(rows[0][0]))
    bands: list[list[_Kept]] = []
    for index, row in enumerate(rows):
        found = [[_shifted(line, tile.left, tile.top) for line in read(tile)] for tile in row]
        low, high = _owned_band(rows, index, slack=overlap / 8)
        top, bottom = row[0].top, row[0].bottom
        joined = _join_columns(row, found)
        bands.append([_Kept(line, min(line.top - top, bottom - line.bottom)) for line in joined if low <= _centre_y(line) < high])
    for upper, lower in pairwise(bands):
        _drop_twins(upper, lower)
    return reading_order(kept.line for band in bands for kept in band)


def _spans(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    if length <= size:
        return [(0, length)]
    count = math.ceil((length - overlap) / (size - overlap))
    # Equal tiles with exactly `overlap` shared, rather than full tiles and a sliver at the end.
    tile = math.ceil((length + (count - 1) * overlap) / count)
    starts = [i * (length - tile) // (count - 1) for i in range(count)]
    return [(start, start + tile) for start in starts]


def _owned_band(rows: Sequence[Sequence[Tile]], index: int, *, slack: float) -> tuple[float, float]:
    # Each row owns the page between the middles of its overlaps: a line cut by a row's edge
    # has its centre beyond that middle, so only the row that sees it whole keeps it. Boxes of
    # one line differ by a pixel or two between tiles, so the bands overlap by `slack` and a
    # line on a boundary, kept twice, loses one copy in `_drop_twins`.
    low = (rows[index - 1][0].bottom + rows[index][0].top) / 2 - slack if index > 0 else -math.inf
    high = (rows[index][0].bottom + rows[index + 1][0].top) / 2 + slack if index + 1 < len(rows) else math.inf
    return low, high


@dataclass(frozen=True)
class _Kept:
    line: Line
    clearance: float  # distance from its tile's top or bottom edge, whichever is nearer


def _drop_twins(upper: list[_Kept], lower: list[_Kept]) -> None:
    # Each tile may split a line differently, so twins come in groups: copies from either side
    # linked by overlapping. Per group keep the side whose copies lie further from a tile edge:
    # those are the ones no edge cut.
    links = [(i, j) for i, up in enumerate(upper) for j, down in enumerate(lower) if _same_place(up.line, down.line)]
    drop_up: set[int] = set()
    drop_down: set[int] = set()
    grouped: set[int] = set()
    for i0, _ in links:
        if i0 in grouped:
            continue
        ups: set[int] = {i0}
        downs: set[int] = set()
        while True:
            more_downs = {j for i, j in links if i in ups} - downs
            more_ups = {i for i, j in links if j in downs | more_downs} - ups
            if not more_downs and not more_ups:
                break
            downs |= more_downs
            ups |= more_ups
        grouped |= ups
        if min(upper[i].clearance for i in ups) >= min(lower[j].clearance for j in downs):
            drop_down |= downs
        else:
            drop_up |= ups
    upper[:] = [kept for i, kept in enumerate(upper) if i not in drop_up]
    lower[:] = [kept for j, kept in enumerate(lower) if j not in drop_down]


def _same_place(a: Line, b: Line) -> bool:
    # Neighbouring words at most touch; sharing half a glyph's width means sharing glyphs.
    shared = min(a.right, b.right) - max(a.left, b.left)
    return _same_row(a, b) and shared >= 0.3 * min(_height(a), _height(b))


@dataclass(frozen=True)
class _Piece:
    line: Line
    first_col: int


def _join_columns(tiles: Sequence[Tile], columns: Sequence[Sequence[Line]]) -> list[Line]:
    pieces = [_Piece(line, 0) for line in columns[0]]
    for col in range(1, len(columns)):
        seam = (tiles[col].left, tiles[col - 1].right)
        for line in sorted(columns[col], key=lambda item: item.left):
            piece = _Piece(line, col)
            # Only pieces reaching back into earlier columns can share pixels with this tile's lines.
            for other in [p for p in pieces if p.first_col < col and _same_view(p.line, line, seam)]:
                pieces.remove(other)
                piece = _merged(other, piece, seam)
            pieces.append(piece)
    return [piece.line for piece in pieces]


def _merged(old: _Piece, new: _Piece, seam: tuple[int, int]) -> _Piece:
    # `old` comes from left of the seam and `new` from right of it. A copy covering the other
    # replaces it, unless its tile's edge cut it where the other copy goes on.
    slack = _slack(old.line, new.line)
    old_cut = abs(old.line.right - seam[1]) <= slack and new.line.right >= old.line.right - slack
    new_cut = abs(new.line.left - seam[0]) <= slack and old.line.left <= new.line.left + slack
    if _contains(old.line, new.line) and not old_cut:
        return old
    if _contains(new.line, old.line) and not new_cut:
        return new
    # `new` may already hold text from further left; whichever copy reaches further right goes second.
    left, right = (old.line, new.line) if new.line.right >= old.line.right - slack else (new.line, old.line)
    cuts = (abs(left.right - seam[1]) <= slack, abs(right.left - seam[0]) <= slack)
    return _Piece(_joined(left, right, cuts), min(old.first_col, new.first_col))


def _same_view(old: Line, new: Line, seam: tuple[int, int]) -> bool:
    if not _same_row(old, new):
        return False
    if _contains(old, new) or _contains(new, old):
        return True
    shared = min(old.right, new.right) - max(old.left, new.left)
    slack = _slack(old, new)
    if abs(new.left - seam[0]) <= slack or abs(old.right - seam[1]) <= slack:
        # A glyph cut by a tile's edge may show as a sliver that barely reaches the other copy.
        return shared >= -slack
    return shared >= 0.3 * min(_height(old), _height(new))


def _contains(outer: Line, inner: Line) -> bool:
    slack = _slack(outer, inner)
    return outer.left - slack <= inner.left and inner.right <= outer.right + slack


def _slack(a: Line, b: Line) -> float:
    # How far two tiles' boxes for the same text may disagree.
    return 2 + 0.1 * min(_height(a), _height(b))


def _joined(left: Line, right: Line, cuts: tuple[bool, bool]) -> Line:
    text = _joined_text(left, right, *cuts)
    weight = len(left.text) + len(right.text)
    score = (left.score * len(left.text) + right.score * len(right.text)) / weight if weight else min(left.score, right.score)
    x0, x1 = min(left.left, right.left), max(left.right, right.right)
    y0, y1 = min(left.top, right.top), max(left.bottom, right.bottom)
    return Line(text=text, box=((x0, y0), (x1, y0), (x1, y1), (x0, y1)), score=score)


def _joined_text(left: Line, right: Line, left_cut: bool, right_cut: bool) -> str:
    # `left_cut`: a tile's edge ends `left`; `right_cut`: a tile's edge starts `right`.
    a, b = left.text, right.text
    shared_px = max(min(left.right, right.right) - right.left, 0.0)
    char_px = max((_width(left) + _width(right)) / max(len(a) + len(b), 1), 1.0)
    expected = shared_px / char_px
    if expected < 0.5 and not (left_cut or right_cut):
        # Boxes that barely touch share no character: they are neighbouring words, which
        # Latin script separates and Chinese or Japanese does not.
        return f"{a} {b}" if (a[-1:] + b[:1]).isascii() else a + b
    # The text both tiles saw is read twice; align on the longest run they agree on, where the
    # geometry says the overlap is. Characters cut by a tile edge are misread, so the run need
    # not reach either end.
    window = int(expected * 1.5) + 3
    tail, head = a[-window:], b[:window]
    aligned = _alignment(tail, head, expected)
    if aligned is not None:
        return a[: len(a) - len(tail) + aligned[0]] + b[aligned[1] :]
    # No agreement: trust the copy no edge cut and drop the glyphs of the other that it covers;
    # the cut glyph counts however little of it shows.
    covered = max(1, round(expected)) if shared_px > 0 else 0
    if right_cut and not left_cut:
        return a + b[covered:]
    if left_cut and not right_cut:
        return a[: max(len(a) - covered, 0)] + b
    middle = right.left + shared_px / 2
    return a[: _chars_before(left, middle)] + b[_chars_before(right, middle) :]


def _chars_before(line: Line, x: float) -> int:
    share = (x - line.left) / max(_width(line), 1.0)
    return min(max(round(len(line.text) * share), 0), len(line.text))


def _alignment(tail: str, head: str, expected: float) -> tuple[int, int] | None:
    # runs[i][j]: how many characters agree from tail[i] and head[j] on.
    runs = [[0] * (len(head) + 1) for _ in range(len(tail) + 1)]
    for i in reversed(range(len(tail))):
        for j in reversed(range(len(head))):
            if tail[i] == head[j]:
                runs[i][j] = runs[i + 1][j + 1] + 1
    needed = min(3, max(1, round(expected / 2)))
    best: tuple[tuple[int, float], int, int] | None = None
    for i in range(len(tail)):
        for j in range(len(head)):
            miss = abs(len(tail) - i + j - expected)
            if runs[i][j] >= needed and miss <= 1 + expected / 2 and (best is None or (runs[i][j], -miss) > best[0]):
                best = ((runs[i][j], -miss), i, j)
    return None if best is None else (best[1], best[2])


def _shifted(line: Line, dx: int, dy: int) -> Line:
    box = tuple((x + dx, y + dy) for x, y in line.box)
    return Line(text=line.text, box=box, score=line.score)  # type: ignore[arg-type]


def _same_row(a: Line, b: Line) -> bool:
    if _slope(a) or _slope(b):
        # A slanted line's upright box is far taller than the line and takes in its neighbours'
        # ends: compare the lines themselves, where they are side by side.
        x = (max(a.left, b.left) + min(a.right, b.right)) / 2
        return abs(_middle_at(a, x) - _middle_at(b, x)) < 0.5 * min(_thickness(a), _thickness(b))
    shared = min(a.bottom, b.bottom) - max(a.top, b.top)
    return shared > 0.5 * min(_height(a), _height(b))


# Lines slanted less than this (about half a degree) are taken as level, as before slant was looked at.
_LEVEL = 0.009


def _slope(line: Line) -> float:
    """The slope of the line's length (0 for one that is level or too short to tell)."""
    (x0, y0), (x1, y1), (x2, y2) = line.box[0], line.box[1], line.box[2]
    dx, dy = (x1 - x0, y1 - y0) if math.hypot(x1 - x0, y1 - y0) >= math.hypot(x2 - x1, y2 - y1) else (x2 - x1, y2 - y1)
    slope = dy / dx if abs(dx) > abs(dy) else 0.0  # a standing box is no line of this page
    return slope if abs(slope) >= _LEVEL else 0.0


def _middle_at(line: Line, x: float) -> float:
    """Where the line's middle runs at `x`."""
    centre_x = sum(p[0] for p in line.box) / 4
    centre_y = sum(p[1] for p in line.box) / 4
    return centre_y + _slope(line) * (x - centre_x)


def _thickness(line: Line) -> float:
    (x0, y0), (x1, y1), (x2, y2) = line.box[0], line.box[1], line.box[2]
    return min(math.hypot(x1 - x0, y1 - y0), math.hypot(x2 - x1, y2 - y1))


def _centre_y(line: Line) -> float:
    return (line.top + line.bottom) / 2


def _height(line: Line) -> float:
    return line.bottom - line.top


def _width(line: Line) -> float:
    return line.right - line.left
