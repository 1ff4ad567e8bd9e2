"""PDFs read page by page: rendered with pdfium, capped in pages, refused clearly when locked or damaged."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ocr_core import pdf
from ocr_core.engines.rapidocr import RapidOcrEngine
from ocr_core.errors import ImageError
from ocr_core.reader import read_bytes
from tests.imagegen import text_image


def pdf_of(pages: list[Image.Image]) -> bytes:
    out = io.BytesIO()
    pages[0].save(out, "PDF", save_all=True, append_images=pages[1:], resolution=150)
    return out.getvalue()


def locked(data: bytes, password: str = "s3cret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def three_pages() -> tuple[bytes, list[str]]:
    texts = ["invoice 1042 page one", "shipping 7731 page two", "total 1280 page three"]
    return pdf_of([text_image([t], size=40).convert("RGB") for t in texts]), texts


@pytest.fixture(scope="module")
def engine() -> RapidOcrEngine:
    return RapidOcrEngine(threads=1)


def test_pages_come_out_in_order_at_a_readable_size():
    data, _ = three_pages()
    assert pdf.is_pdf(data) and pdf.page_count(data) == 3
    rendered = list(pdf.pages(data, max_pages=3))
    assert len(rendered) == 3 and all(page.mode == "RGB" for page in rendered)
    width, height = rendered[0].size
    assert 900 < max(width, height) <= pdf.PAGE_SIDE  # scaled up from its 150 dpi (at most 4x), never past the cap


def test_a_pdf_is_read_page_by_page_in_order(engine, settings):
    data, texts = three_pages()
    reading = read_bytes(data, engine, settings)
    assert reading.text.splitlines() == texts
    tops = [line.top for line in reading.lines]
    assert tops == sorted(tops) and reading.height > 2 * reading.lines[0].bottom  # pages stacked, one below the other


def test_more_pages_than_allowed_are_refused_before_any_is_read(engine, set_env, settings):
    data = pdf_of([Image.new("RGB", (60, 80), "white") for _ in range(500)])
    with pytest.raises(ImageError, match=r"the PDF has 500 pages; at most 20 are read \(OCRHUB_MAX_PDF_PAGES\)"):
        read_bytes(data, engine, settings)
    assert read_bytes(data, engine, set_env(max_pdf_pages="500")).text == ""


def test_a_password_pdf_gets_a_clear_reason(engine, settings):
    with pytest.raises(ImageError, match="protected by a password"):
        read_bytes(locked(three_pages()[0]), engine, settings)


def test_a_damaged_pdf_is_refused_not_crashed(engine, settings):
    with pytest.raises(ImageError, match="the PDF cannot be read"):
        read_bytes(b"%PDF-1.7\n" + b"\x00garbage" * 50, engine, settings)
