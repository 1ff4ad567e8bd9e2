"""Faint repeated stamps leave the text; faint one-offs and repeated dark or grey text stay."""

from __future__ import annotations

from PIL import Image, ImageDraw

from ocr_core.job import Line
from ocr_core.watermark import without_watermarks
from tests.imagegen import font

FACE = font(28)


class Page:
    """A white page that records each line it draws with the box a detector would give it."""

    def __init__(self, width: int = 1000, height: int = 900) -> None:
        self.image = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.lines: list[Line] = []

    def write(self, text: str, x: int, y: int, grey: int = 20) -> Line:
        self.draw.text((x, y), text, font=FACE, fill=(grey, grey, grey))
        left, top, right, bottom = self.draw.textbbox((x, y), text, font=FACE)
        line = Line(text=text, box=((left - 4, top - 4), (right + 4, top - 4), (right + 4, bottom + 4), (left - 4, bottom + 4)), score=0.9)
        self.lines.append(line)
        return line


def test_faint_repeated_name_and_its_cut_pieces_are_dropped() -> None:
    page = Page()
    body = [page.write(f"budget review line {index} for the team", 40, 40 + 60 * index) for index in range(10)]
    marks = [page.write("Zhang Wei 0412", x, y, grey=232) for x, y in ((600, 80), (600, 320), (600, 560), (300, 760))]
    piece = page.write("ng Wei 0412", 0, 840, grey=232)

    kept = without_watermarks(page.lines, page.image)

    assert kept == body
    assert not set(marks + [piece]) & set(kept)


def test_on_a_stamped_page_whatever_is_as_faint_as_the_stamps_goes_but_grey_captions_stay() -> None:
    page = Page()
    body = [page.write(f"quarterly figures row {index} as sent", 40, 40 + 60 * index) for index in range(8)]
    body.append(page.write("Figure 2: sent on Monday", 40, 520, grey=150))
    for x, y in ((600, 60), (600, 300), (600, 540)):
        page.write("Li Na 0417", x, y, grey=232)
    page.write("Ll Nn", 300, 700, grey=234)  # a stamp half lost, misread: like no other piece of it

    assert without_watermarks(page.lines, page.image) == body


def test_grey_text_that_repeats_is_not_a_watermark() -> None:
    page = Page()
    body = []
    for index in range(5):
        body.append(page.write(f"message number {index} in the chat", 40, 40 + 120 * index))
        body.append(page.write("10:42", 40, 90 + 120 * index, grey=150))  # a timestamp under each message

    assert without_watermarks(page.lines, page.image) == body


def test_a_faint_line_seen_once_stays() -> None:
    page = Page()
    for index in range(6):
        page.write(f"invoice {index} paid in full", 40, 40 + 60 * index)
    page.write("draft", 600, 200, grey=232)
    page.write("draft", 600, 400, grey=232)

    assert without_watermarks(page.lines, page.image) == page.lines


def test_dark_repeated_lines_stay() -> None:
    page = Page()
    for index in range(6):
        page.write("Total 12.00", 40, 40 + 60 * index)

    assert without_watermarks(page.lines, page.image) == page.lines
