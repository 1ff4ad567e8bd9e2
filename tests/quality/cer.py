"""Character error rate: how far a reading is from the truth, in edits per character of truth.

Normalisation, applied to both sides before comparing:
- Unicode NFC only. No NFKC or case folding: a full-width `？` read as `?`, or `O` read as `0`,
  is an error a reader sees, so it counts.
- Every run of whitespace, line breaks included, becomes one space; leading and trailing
  whitespace goes. A line break therefore weighs what a space does: engines differ in whether a
  row with a wide gap (a receipt's item and its amount) is one box or two, and that is layout,
  not misreading. But the order of the text is kept, so a page read in the wrong order (columns
  interleaved, last line first) costs the edits it takes to move the text back, and so does
  anything read that is not there (a watermark repeated over the page is one insertion per
  character).
- A space beside a Chinese or Japanese character (or full-width punctuation) goes too: those
  scripts put no spaces between words, so such a space is typesetting (`黄涛 10:37` reads as
  `黄涛10:37`), and the recogniser drops it. Between Latin words a space stays and counts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Tally", "cer", "levenshtein", "mean_rate", "normalise"]

_WHITESPACE = re.compile(r"\s+")
# CJK punctuation, kana, CJK ideographs (with extension A), full-width forms; not Hangul, which spaces words.
_UNSPACED = "\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_SPACE_BY_UNSPACED = re.compile(f"(?<=[{_UNSPACED}]) | (?=[{_UNSPACED}])")


def normalise(text: str) -> str:
    collapsed = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    return _SPACE_BY_UNSPACED.sub("", collapsed)


def levenshtein(a: str, b: str) -> int:
    """Edits (insert, delete, substitute one character) that turn `a` into `b`.

    Myers' bit-parallel algorithm in Hyyrö's form for the global distance: one column of the
    dynamic-programming table is two bit vectors (+1 and -1 steps down the column), held in
    Python integers as long as `a`, so a 4,000-character page costs 4,000 big-integer steps
    rather than 16 million cell updates.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    mask = (1 << len(b)) - 1
    last = 1 << (len(b) - 1)
    matches: dict[str, int] = {}
    for index, char in enumerate(b):
        matches[char] = matches.get(char, 0) | (1 << index)
    up, down = mask, 0  # the column's +1 and -1 steps; the first column climbs by 1 per row
    distance = len(b)
    for char in a:
        equal = matches.get(char, 0)
        vertical = equal | down
        horizontal = (((equal & up) + up) ^ up) | equal
        plus = down | (~(horizontal | up) & mask)
        minus = up & horizontal
        if plus & last:
            distance += 1
        elif minus & last:
            distance -= 1
        plus = ((plus << 1) | 1) & mask  # the top row climbs by 1 per column: a global alignment
        minus = (minus << 1) & mask
        up = minus | (~(vertical | plus) & mask)
        down = plus & vertical
    return distance


def cer(truth: str, reading: str) -> float:
    """Edits from the normalised truth to the normalised reading, per character of truth; may exceed 1."""
    return Tally.of(truth, reading).rate


@dataclass(frozen=True)
class Tally:
    """Edits and truth characters, which add up across images (a case's CER is its sum's rate)."""

    edits: int
    length: int

    @classmethod
    def of(cls, truth: str, reading: str) -> Tally:
        expected = normalise(truth)
        if not expected:
            raise ValueError("a truth with no text has no character error rate")
        return cls(levenshtein(expected, normalise(reading)), len(expected))

    @classmethod
    def total(cls, tallies: Iterable[Tally]) -> Tally:
        items = list(tallies)
        return cls(sum(item.edits for item in items), sum(item.length for item in items))

    @property
    def rate(self) -> float:
        return self.edits / self.length


def mean_rate(by_case: Mapping[str, Tally]) -> float:
    """The set's overall CER: the mean of its cases' rates, so a case of forty long lines weighs no
    more than a receipt, and every kind of picture counts alike."""
    return sum(tally.rate for tally in by_case.values()) / len(by_case)
