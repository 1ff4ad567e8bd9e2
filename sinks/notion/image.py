"""The original image, as Notion will take it: a format Notion shows, no larger than the workspace
allows. A PDF (sent as a Feishu file, or uploaded) goes up as it is, when it fits."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from PIL import Image

from ocr_core.errors import ImageError
from ocr_core.image import normalise
from ocr_core.pdf import is_pdf

# One single-part upload carries at most 20 MiB whatever the plan allows.
SINGLE_PART_LIMIT = 20 * 1024 * 1024
# The Free plan's limit, used when users.me does not say.
DEFAULT_LIMIT = 5 * 1024 * 1024
JPEG_QUALITY = 85
PDF = "application/pdf"
MIN_SIDE = 64


@dataclass(frozen=True)
class Prepared:
    data: bytes | None
    content_type: str = ""
    filename: str = ""
    note: str = ""  # what was done to the image, or why there is none


def sniff(data: bytes) -> tuple[str, str] | None:
    """(content type, extension) for the image formats Notion displays, from the file's first bytes."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", "jpg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif", "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp", "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff", "tiff"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1"):
        return "image/heic", "heic"
    return None


def prepare(data: bytes, limit: int, stem: str, *, max_pixels: int) -> Prepared:
    limit = min(limit, SINGLE_PART_LIMIT)
    stem = re.sub(r"[^\w.-]+", "_", stem)[:100] or "image"
    if is_pdf(data):
        if len(data) <= limit:
            return Prepared(data, PDF, f"{stem}.pdf")
        return Prepared(None, note=f"PDF not attached: its {len(data)} bytes are over the workspace's {limit}-byte upload limit")
    kind = sniff(data)
    if kind is not None and len(data) <= limit:
        return Prepared(data, kind[0], f"{stem}.{kind[1]}")
    try:
        image = normalise(data, max_pixels=max_pixels, max_bytes=max(len(data), 1))
    except ImageError as exc:
        return Prepared(None, note=f"image not attached: {exc}")
    if kind is None:
        png = _encode(image, "PNG")
        if len(png) <= limit:
            return Prepared(png, "image/png", f"{stem}.png", note="converted to PNG (Notion does not show the original format)")
    scale = 1.0
    while True:
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        resized = image if scale == 1.0 else image.resize((width, height), Image.Resampling.LANCZOS)
        jpeg = _encode(resized, "JPEG")
        if len(jpeg) <= limit:
            return Prepared(jpeg, "image/jpeg", f"{stem}.jpg", note=f"re-encoded as a {width}x{height} JPEG of {len(jpeg)} bytes to fit the workspace's {limit}-byte upload limit")
        if min(width, height) <= MIN_SIDE:
            return Prepared(None, note=f"image not attached: it does not fit the workspace's {limit}-byte upload limit even at {width}x{height}")
        # Encoded size grows roughly with the pixel count, so scale the sides by the square root.
        scale *= min(0.9, (limit / len(jpeg)) ** 0.5 * 0.95)


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, fmt, quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(out, fmt, optimize=True)
    return out.getvalue()
