"""Pages as people post them, drawn flat: a document, two columns, vertical Chinese, a receipt, a chat
window. Each drawing returns the image and the lines it says, in the order a person reads them."""

from __future__ import annotations

import random
from functools import cache

from PIL import Image, ImageDraw, ImageFont

from tests.imagegen import DEJAVU

__all__ = [
    "Drawn", "chat_window", "cjk", "latin", "receipt", "text_page", "two_columns", "vertical_columns", "watermarked",
]  # fmt: skip

Drawn = tuple[Image.Image, list[str]]
Face = ImageFont.FreeTypeFont

_SERIF = DEJAVU.with_name("DejaVuSerif.ttf")

INK = (25, 25, 25)
PAPER = (255, 255, 255)


@cache
def latin(size: int, *, serif: bool = False) -> Face:
    path = _SERIF if serif else DEJAVU
    if not path.exists():
        raise RuntimeError(f"the quality set draws Latin text in {path} (Debian's fonts-dejavu-core)")
    return ImageFont.truetype(str(path), size)


@cache
def cjk(size: int) -> Face:
    """Noto Sans SC (Chinese, Latin, full-width punctuation) from the `pylopdf-fonts-zh-cn` wheel, a test
    dependency, rather than whatever the system has: the set must draw alike on every machine."""
    try:
        import pylopdf_fonts_zh_cn
    except ImportError:
        raise RuntimeError("the quality set draws Chinese with Noto Sans SC: pip install -e '.[test]'") from None
    return ImageFont.truetype(str(pylopdf_fonts_zh_cn.sans_path()), size)


def text_page(lines: list[str], face: Face, *, margin: int = 60, leading: float = 1.6, aspect: float = 0) -> Drawn:
    """Lines of text down a white page as wide as the longest line needs, at least `aspect` times as
    tall as wide (a sheet of paper whose text ends before its foot)."""
    step = int(face.size * leading)
    width = max(int(face.getlength(line)) for line in lines) + 2 * margin
    image = Image.new("RGB", (width, max(step * len(lines) + 2 * margin, int(width * aspect))), PAPER)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((margin, margin + index * step), line, font=face, fill=INK)
    return image, list(lines)


def two_columns(
    title: str, left: list[str], right: list[str], face: Face, heading: Face, *, gutter: int = 100, margin: int = 70
) -> Drawn:
    """A title across the top, then two columns side by side: read the left one down, then the right."""
    step = int(face.size * 1.55)
    column = max(int(face.getlength(line)) for line in left + right)
    top = margin + int(heading.size * 2.2)
    width = 2 * margin + 2 * column + gutter
    image = Image.new("RGB", (width, top + step * max(len(left), len(right)) + margin), PAPER)
    draw = ImageDraw.Draw(image)
    draw.text((width // 2, margin), title, font=heading, fill=INK, anchor="mt")
    for x, lines in ((margin, left), (margin + column + gutter, right)):
        for index, line in enumerate(lines):
            draw.text((x, top + index * step), line, font=face, fill=INK)
    return image, [title, *left, *right]


def vertical_columns(columns: list[str], face: Face, *, margin: int = 70) -> Drawn:
    """Traditional vertical Chinese: characters top to bottom, the first column at the right."""
    advance = int(face.size * 1.05)
    pitch = int(face.size * 1.8)
    width = 2 * margin + pitch * len(columns)
    image = Image.new("RGB", (width, 2 * margin + advance * max(len(text) for text in columns)), (250, 247, 238))
    draw = ImageDraw.Draw(image)
    for index, text in enumerate(columns):
        centre = width - margin - pitch * index - pitch // 2
        for row, char in enumerate(text):
            draw.text((centre, margin + row * advance), char, font=face, fill=INK, anchor="mt")
    return image, list(columns)


def receipt(header: list[str], rows: list[tuple[str, str]], footer: list[str], face: Face, *, width: int = 620) -> Drawn:
    """Thermal-paper receipt: centred header, item rows with the amount flush right, centred footer."""
    step = int(face.size * 1.5)
    margin = 36
    count = len(header) + len(rows) + len(footer) + 2
    image = Image.new("RGB", (width, 2 * margin + step * count), (246, 244, 236))
    draw = ImageDraw.Draw(image)
    y = margin
    for line in header:
        draw.text((width // 2, y), line, font=face, fill=INK, anchor="mt")
        y += step
    y = _rule(draw, y, step, width, margin)
    for item, price in rows:
        draw.text((margin, y), item, font=face, fill=INK)
        draw.text((width - margin, y), price, font=face, fill=INK, anchor="ra")
        y += step
    y = _rule(draw, y, step, width, margin)
    for line in footer:
        draw.text((width // 2, y), line, font=face, fill=INK, anchor="mt")
        y += step
    return image, [*header, *(f"{item} {price}" for item, price in rows), *footer]


def _rule(draw: ImageDraw.ImageDraw, y: int, step: int, width: int, margin: int) -> int:
    """A dashed separator, which is no text: dashes drawn as short strokes so no font makes a `-` of them."""
    middle = y + step // 2
    for x in range(margin, width - margin, 16):
        draw.line((x, middle, x + 8, middle), fill=(120, 120, 120), width=2)
    return y + step


def watermarked(page: Image.Image, mark: str, face: Face, *, angle: float = 28, strength: float = 0.13, seed: int = 0) -> Image.Image:
    """`mark` tiled diagonally over `page` in faint grey, as chat and document apps stamp a viewer's name."""
    length = int(face.getlength(mark))
    stamp = Image.new("L", (length + 20, face.size * 2), 0)
    ImageDraw.Draw(stamp).text((10, face.size // 2), mark, font=face, fill=255)
    stamp = stamp.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    alpha = Image.new("L", page.size, 0)
    rng = random.Random(seed)
    step_x, step_y = int(length * 1.5), int(face.size * 6)
    for row, y in enumerate(range(-stamp.height // 2, page.height, step_y)):
        shift = (row % 2) * step_x // 2 + rng.randint(0, 8)
        for x in range(-stamp.width // 2 + shift, page.width, step_x):
            alpha.paste(stamp, (x, y), stamp)
    grey = Image.new("RGB", page.size, (90, 90, 90))
    return Image.composite(grey, page, alpha.point(lambda value: int(value * strength)))


def chat_window(
    title: str,
    messages: list[tuple[str, str, bool]],
    face: Face,
    *,
    width: int = 1280,
    chrome: bool = True,
) -> Drawn:
    """A chat app: a title bar (with a desktop window's red, yellow and green dots when `chrome`), then
    messages as (sender line, text, mine) in bubbles, others' on the left and mine on the right."""
    small = type(face)(face.path, int(face.size * 0.75))
    bar = int(face.size * 2.4)
    gap = int(face.size * 0.9)
    heights = [small.size + 14 + face.size + 40 + gap for _ in messages]
    image = Image.new("RGB", (width, bar + 40 + sum(heights) + 40), (243, 243, 243))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, bar), fill=(228, 228, 230))
    if chrome:
        radius = max(7, face.size * 3 // 8)  # a retina screenshot: dots 24 px across beside 32 px text
        for index, colour in enumerate(((255, 95, 87), (254, 188, 46), (40, 200, 64))):
            centre = (24 + radius + index * (radius * 3), bar // 2)
            draw.ellipse((centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius), fill=colour)
    draw.text((width // 2, bar // 2), title, font=face, fill=INK, anchor="mm")
    truth = [title]
    y = bar + 40
    for (sender, text, mine), height in zip(messages, heights):
        text_width = int(face.getlength(text))
        x = width - 60 - text_width if mine else 60
        if sender:
            anchor = "rt" if mine else "lt"
            draw.text((width - 60 if mine else 60, y), sender, font=small, fill=(130, 130, 130), anchor=anchor)
            truth.append(sender)
        top = y + small.size + 14
        bubble = (149, 236, 105) if mine else (255, 255, 255)
        middle = top + (face.size + 28) // 2
        draw.rounded_rectangle((x - 20, top, x + text_width + 20, top + face.size + 28), radius=10, fill=bubble)
        draw.text((x, middle), text, font=face, fill=INK, anchor="lm")
        truth.append(text)
        y += height
    return image, truth
