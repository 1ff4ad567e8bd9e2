"""Images prepared for a vision-language model: pages no longer than `max_side`, tall captures cut, not squashed.

Shrinking a 1080×9000 chat capture to 1024 pixels tall would leave 4-pixel text; it is cut into
overlapping pages of a readable shape instead, each read on its own, and the lines the overlap
repeats are dropped when the pages' texts are joined.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

from PIL import Image

# HunyuanOCR's vision encoder turns each 16×16 patch into a feature and merges 2×2 of them into one
# language-model token, with one extra token closing each row: about one token per 32×32 pixels.
PIXELS_PER_TOKEN_SIDE = 32
PAGE_ASPECT = 1.5  # pages at most this many times taller than wide
PAGE_OVERLAP = 0.08  # of a page's height


@dataclass(frozen=True)
class Page:
    image: Image.Image  # resized, RGB
    box: tuple[int, int, int, int]  # left, top, right, bottom in the source image's pixels

    @property
    def tokens(self) -> int:
        columns = math.ceil(self.image.width / PIXELS_PER_TOKEN_SIDE)
        rows = math.ceil(self.image.height / PIXELS_PER_TOKEN_SIDE)
        return columns * rows + rows + 2

    def data_url(self) -> str:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG", optimize=False, compress_level=1)
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def pages(image: Image.Image, max_side: int = 1024) -> list[Page]:
    image = image.convert("RGB")
    width, height = image.size
    page_height = max(1, int(width * PAGE_ASPECT))
    if height <= page_height * 1.15:
        return [Page(_fit(image, max_side), (0, 0, width, height))]
    step = max(1, int(page_height * (1 - PAGE_OVERLAP)))
    count = math.ceil((height - page_height) / step) + 1
    step = math.ceil((height - page_height) / (count - 1))  # even steps, the last page flush with the bottom
    result = []
    for index in range(count):
        top = min(index * step, height - page_height)
        box = (0, top, width, top + page_height)
        result.append(Page(_fit(image.crop(box), max_side), box))
    return result


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def join_pages(texts: list[str]) -> str:
    """Page texts in order, without the lines that a page's overlap read twice."""
    lines: list[str] = []
    for text in texts:
        new = [line for line in text.splitlines()]
        drop = 0
        for n in range(min(6, len(lines), len(new)), 0, -1):
            if [_key(x) for x in lines[-n:]] == [_key(x) for x in new[:n]]:
                drop = n
                break
        lines.extend(new[drop:])
    return "\n".join(lines).strip("\n")


def _key(line: str) -> str:
    return "".join(line.split())
