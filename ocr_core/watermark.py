"""Faint repeated stamps (a viewer's name tiled over a shared document) taken out of the text.

A watermark is drawn light so the page stays legible: its lines have a fraction of the ink
contrast of the page's text. Light grey alone is no watermark (chat timestamps, captions), so a
line goes only when it is faint and its text, or a piece of it cut by the page's edge, recurs
faintly at least `_REPEATS` times; or, on a page with such stamps, when it is as faint as they are.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from difflib import SequenceMatcher

import numpy as np
from PIL import Image, ImageDraw

from ocr_core.job import Line

__all__ = ["without_watermarks"]

# Faint: ink contrast under this share of the page's median line.
_FAINT = 0.4
_REPEATS = 3
# Once a page shows stamps: lines no more than this many times as contrasted as they are stamps too.
_AS_FAINT = 1.5
# A piece of a stamp cut by the page's edge: this alike to the whole stamp's text.
_ALIKE = 0.6


def without_watermarks(lines: Sequence[Line], image: Image.Image) -> list[Line]:
    """`lines` without the faint, repeated ones; `image` is the page the boxes are in."""
    if len(lines) < _REPEATS:
        return list(lines)
    grey = np.asarray(image.convert("L"))
    contrasts = [_contrast(grey, line) for line in lines]
    typical = statistics.median(contrasts)
    faint = [line for line, contrast in zip(lines, contrasts) if contrast < _FAINT * typical]
    stamps = _repeated({_key(line.text) for line in faint}, [_key(line.text) for line in faint])
    if not stamps:
        return list(lines)
    stamped = [
        contrast < _FAINT * typical and any(_part_of(_key(line.text), stamp) for stamp in stamps)
        for line, contrast in zip(lines, contrasts)
    ]
    # A stamp cut where the detector lost its faint strokes reads as some other piece of it ("李娜lina"
    # of "李娜 lina 0417"): on a stamped page, what is as faint as the stamps goes with them.
    as_faint = _AS_FAINT * max(contrast for contrast, is_stamp in zip(contrasts, stamped) if is_stamp)
    return [
        line
        for line, contrast, is_stamp in zip(lines, contrasts, stamped)
        if not (is_stamp or contrast < min(as_faint, _FAINT * typical))
    ]


def _contrast(grey: np.ndarray, line: Line) -> float:
    """Paper minus ink inside the line's box (the 90th and 5th centiles of its grey levels). Only the
    box itself counts: a slanted stamp's upright bounds take in the dark text it runs across."""
    top, bottom = max(int(line.top), 0), min(int(np.ceil(line.bottom)), grey.shape[0])
    left, right = max(int(line.left), 0), min(int(np.ceil(line.right)), grey.shape[1])
    if bottom <= top or right <= left:
        return 0.0
    inside = Image.new("1", (right - left, bottom - top), 0)
    ImageDraw.Draw(inside).polygon([(x - left, y - top) for x, y in line.box], fill=1)
    pixels = grey[top:bottom, left:right][np.asarray(inside)]
    if pixels.size == 0:
        return 0.0
    ink, paper = np.percentile(pixels, (5, 90))
    return float(paper - ink)


def _repeated(candidates: set[str], keys: list[str]) -> list[str]:
    """Texts that at least `_REPEATS` faint lines spell out, whole or as a cut piece."""
    return [text for text in candidates if len(text) >= 2 and sum(_part_of(key, text) for key in keys) >= _REPEATS]


def _part_of(piece: str, stamp: str) -> bool:
    if not piece:
        return False
    if piece in stamp:
        return True
    return SequenceMatcher(None, piece, stamp).ratio() >= _ALIKE


def _key(text: str) -> str:
    return "".join(text.split()).casefold()
