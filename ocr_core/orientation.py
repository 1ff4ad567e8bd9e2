"""Which way up a page is, for pictures whose EXIF tag is gone (chat apps strip it) or wrong.

Decided from the lines the detector found in the page's first tile, before any is read. The
detector finds lines whatever way up they are, and each line is cut out along its length; the
direction classifier, shown the middle of a few of the longest, says whether each cut runs with
the text or against it. So each says which way its text runs on the page, and the page is turned
the way most of them say. An upright page (the common case) then goes on to be read from that same
detection; only a turned one is detected again, upright.

Vertical Chinese (columns top to bottom, the first at the right) is cut out, like any tall line,
running down the page; its characters then lie on their sides, which the classifier takes for
upright, and the page is read turned a quarter back: rows in the columns' order, right to left.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from PIL import Image

from ocr_core.job import Line, Point

__all__ = ["Detected", "Orientable", "page_turn", "upright"]

Quad = tuple[Point, Point, Point, Point]

# How many of the longest lines the classifier is asked about (one batch of it).
PROBES = 6
# A box is a line lying down (or standing up) when one side is this many times the other.
ELONGATED = 1.5

_TRANSPOSE = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


class Detected(Protocol):
    """Lines found on an image and not yet read."""

    @property
    def quads(self) -> Sequence[Quad]: ...

    @property
    def directions(self) -> Sequence[Point]: ...  # the way each line's cut-out runs on the image, a unit vector


@runtime_checkable
class Orientable(Protocol):
    """An engine that finds lines, says which of its cut-outs are upside down, and reads what it found."""

    name: str

    def detect(self, image: Image.Image) -> Detected: ...

    def upside_down(self, detection: Detected, which: Sequence[int]) -> list[float]: ...

    def recognise_detected(self, detection: Detected) -> list[Line]: ...


def page_turn(detection: Detected, engine: Orientable) -> int:
    """How far the page's text is turned clockwise: 0, 90, 180 or 270 degrees (0 when no line says)."""
    lines = [i for i, quad in enumerate(detection.quads) if _long_side(quad) > ELONGATED * _short_side(quad)]
    probes = sorted(lines, key=lambda i: -_long_side(detection.quads[i]))[:PROBES]
    votes: Counter[int] = Counter()
    for index, over in zip(probes, engine.upside_down(detection, probes)):
        dx, dy = detection.directions[index]
        if over > 0.5:
            dx, dy = -dx, -dy
        # Image y grows downwards: text running down the page is turned a quarter clockwise.
        votes[round(math.degrees(math.atan2(dy, dx)) / 90) * 90 % 360] += 1
    if not votes:
        return 0
    # Upright wins a tie: turning a page that was right is the costlier mistake.
    return max(votes, key=lambda turn: (votes[turn], turn == 0))


def upright(image: Image.Image, turn: int) -> Image.Image:
    """`image` turned back by `turn` degrees, so its text lies as it was written."""
    return image.transpose(_TRANSPOSE[turn]) if turn else image


def _long_side(quad: Quad) -> float:
    return max(math.dist(quad[0], quad[1]), math.dist(quad[1], quad[2]))


def _short_side(quad: Quad) -> float:
    return min(math.dist(quad[0], quad[1]), math.dist(quad[1], quad[2]))
