"""PDFs (invoices, scans) read page by page: each page rendered to a picture with pdfium
(pypdfium2 ships its own binary), at a size the engine reads well, never more pages than allowed."""

from __future__ import annotations

from collections.abc import Iterator

from PIL import Image

from ocr_core.errors import ImageError

MAGIC = b"%PDF-"
# A rendered page's long side: an A4 page comes out about 144 dpi, where 9-point text is ~18 px tall.
PAGE_SIDE = 1700
MAX_SCALE = 4.0  # a tiny page (a receipt) is not blown up past this


def is_pdf(data: bytes) -> bool:
    # The header may follow a little junk; PDF readers look in the first kilobyte.
    return MAGIC in data[:1024]


def page_count(data: bytes) -> int:
    with _opened(data) as document:
        return len(document)


def pages(data: bytes, max_pages: int) -> Iterator[Image.Image]:
    """Each page as an RGB picture, in order. ImageError (nothing rendered) for a PDF that is damaged,
    wants a password, or has more than `max_pages` pages."""
    with _opened(data) as document:
        count = len(document)
        if count == 0:
            raise ImageError("the PDF has no pages", "empty")
        if count > max_pages:
            raise ImageError(
                f"the PDF has {count} pages; at most {max_pages} are read (OCRHUB_MAX_PDF_PAGES): "
                f"send the pages you need as a shorter PDF or as pictures",
                "pdf_too_long",
            )
        for index in range(count):
            page = document[index]
            try:
                width, height = page.get_size()
                scale = min(MAX_SCALE, PAGE_SIDE / max(width, height, 1))
                bitmap = page.render(scale=scale, rotation=0)
                try:
                    yield bitmap.to_pil().convert("RGB")
                finally:
                    bitmap.close()
            finally:
                page.close()


class _opened:
    def __init__(self, data: bytes) -> None:
        import pypdfium2

        try:
            self.document = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError as exc:
            if "password" in str(exc).lower():
                raise ImageError("the PDF is protected by a password: send it without one", "pdf_locked") from None
            raise ImageError(f"the PDF cannot be read ({exc})", "damaged") from None

    def __enter__(self):  # noqa: ANN204
        return self.document

    def __exit__(self, *exc: object) -> None:
        self.document.close()
