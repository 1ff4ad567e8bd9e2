"""Untrusted image bytes in, one upright RGB picture out, or an `ImageError` a chat user can act on."""

from __future__ import annotations

import functools
import io
import re
import struct
import warnings
from typing import cast

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageStat, UnidentifiedImageError

from ocr_core.errors import ImageError

__all__ = ["FORMATS", "check_file_size", "normalise"]

# Only decoders for formats people actually send; this also keeps Pillow's riskier plugins
# (EPS runs Ghostscript) out of reach of untrusted bytes.
FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF", "HEIF", "AVIF")
_FORMAT_NAMES = "PNG, JPEG, WebP, BMP, TIFF, GIF or HEIC"

# Pillow's plugins report malformed data through any of these; each means "cannot be decoded".
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    RuntimeError,
)

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
_OTHER_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript file"),
    (b"PK\x03\x04", "a ZIP archive or Office document"),
    (b"8BPS", "a Photoshop (PSD) file"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"OggS", "an audio file"),
    (b"ID3", "an audio file"),
)


def normalise(data: bytes, *, max_pixels: int, max_bytes: int) -> Image.Image:
    """Decode `data` fully and return its first frame as an upright RGB image.

    EXIF orientation is applied, transparency is flattened onto whichever of white or black
    contrasts with the visible pixels, and every colour mode becomes 8-bit RGB. Raises
    `ImageError` for empty, oversized, truncated, corrupt, bomb-sized or non-image input, and
    RuntimeError if something in the process set `PIL.ImageFile.LOAD_TRUNCATED_IMAGES`.
    """
    check_file_size(len(data), max_bytes=max_bytes)
    image = _decode(data, max_pixels)
    orientation = _orientation(image)
    rgb = _to_rgb(image)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    return rgb


def check_file_size(size: int, *, max_bytes: int) -> None:
    """Raise `ImageError` for an empty file or one over `max_bytes`, before reading or decoding it."""
    if size == 0:
        raise ImageError("the file is empty")
    if size > max_bytes:
        raise ImageError(f"the file is {_file_size(size)}, over the {_file_size(max_bytes)} limit")


@functools.cache
def _openers() -> tuple[str, ...]:
    import pillow_heif

    pillow_heif.register_heif_opener()
    Image.init()
    # Pillow raises KeyError for a format it lacks (AVIF arrived in 11.3), so ask only for known ones.
    return tuple(name for name in FORMATS if name in Image.OPEN)


def _decode(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # With this flag Pillow pads a cut-off upload with grey and reports success; some
        # import in this process turned it on, and we must not read half pictures.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated images would be accepted")
    formats = _openers()
    image: ImageFile.ImageFile | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=formats)
            _check_size(image.size, max_pixels)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_bomb_message(str(exc), max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified_message(data)) from None
    except _DECODE_ERRORS as exc:
        found = (image.format if image is not None else None) or ""
        kind = {"MPO": "JPEG ", "HEIF": "HEIC "}.get(found, f"{found} " if found else "")
        raise ImageError(f"the {kind}image is truncated or corrupt") from exc
    return image


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"the image has no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"the image is {width}×{height} = {_megapixels(width * height)} MP, "
            f"over the {_megapixels(max_pixels)} MP limit"
        )


def _bomb_message(detail: str, max_pixels: int) -> str:
    # Pillow refuses before we see the size, and says only the pixel count.
    found = re.search(r"\((\d+) pixels\)", detail)
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if found is None:
        return f"the image is over the {_megapixels(limit)} MP limit"
    return f"the image is {_megapixels(int(found.group(1)))} MP, over the {_megapixels(limit)} MP limit"


def _unidentified_message(data: bytes) -> str:
    head = data[:16]
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "the image is truncated or corrupt"
    if head[4:8] == b"ftyp":
        if head[8:12] in _HEIF_BRANDS:
            return "the image is truncated or corrupt"
        return f"not an image (it looks like a video); send a {_FORMAT_NAMES} picture"
    kind = _sniff(data)
    if kind is None:
        return f"not an image, or not in a supported format; send a {_FORMAT_NAMES} picture"
    return f"not an image (it looks like {kind}); send a {_FORMAT_NAMES} picture"


def _sniff(data: bytes) -> str | None:
    for magic, kind in _OTHER_MAGIC:
        if data.startswith(magic):
            return kind
    text = _as_text(data[:4096])
    if text is None:
        return None
    head = text.lstrip().lower()
    if head.startswith(("<!doctype html", "<html")) or "<html" in head[:1024]:
        return "an HTML web page"
    if "<svg" in head[:1024]:
        return "an SVG drawing"
    if head.startswith("<?xml"):
        return "an XML document"
    return "text"


def _as_text(sample: bytes) -> str | None:
    sample = sample.removeprefix(b"\xef\xbb\xbf")
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The sample may end inside a multi-byte character.
        if exc.start < len(sample) - 3:
            return None
        text = sample[: exc.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return None
    return text


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        # A mangled EXIF block is no reason to refuse pixels that decoded fine.
        return 1
    return value if isinstance(value, int) else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_BIT_MODES:
        grey = _stretch(image)
        alpha = _high_bit_alpha(image)
        return _flatten(grey.convert("RGB"), alpha) if alpha is not None else grey.convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return _flatten(rgba.convert("RGB"), rgba.getchannel("A"))
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageError(f"the image uses a colour mode ({image.mode}) that cannot be read") from exc


def _stretch(image: Image.Image) -> Image.Image:
    # Pillow's own conversion clips 16- and 32-bit values at 255, turning most such images
    # white; map the range actually used onto 0..255 instead.
    values = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return Image.new("L", image.size, 0)
    low = float(values[finite].min())
    high = float(values[finite].max())
    scaled = np.zeros(values.shape, dtype=np.float32)
    if high > low:
        np.subtract(values, low, out=scaled, where=finite)
        scaled *= 255.0 / (high - low)
        np.clip(scaled, 0, 255, out=scaled)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")


def _high_bit_alpha(image: Image.Image) -> Image.Image | None:
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return None
    opaque = np.asarray(image) != transparent
    return Image.fromarray(opaque.astype(np.uint8) * 255, "L")


def _flatten(rgb: Image.Image, alpha: Image.Image) -> Image.Image:
    lowest, highest = cast(tuple[int, int], alpha.getextrema())
    if lowest == 255:
        return rgb
    background = (255, 255, 255)
    if highest > 0:
        threshold = 128 if highest >= 128 else 1
        visible = alpha.point(lambda a: 255 if a >= threshold else 0)
        # Dark marks need a light ground and light marks a dark one, whatever colour the
        # transparent pixels happen to hold.
        if ImageStat.Stat(rgb.convert("L"), visible).mean[0] >= 128:
            background = (0, 0, 0)
    return Image.composite(rgb, Image.new("RGB", rgb.size, background), alpha)


def _file_size(size: int) -> str:
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return (f"{size // scale}" if size % scale == 0 else f"{size / scale:.1f}") + f" {unit}"
    return f"{size} bytes"


def _megapixels(pixels: int) -> str:
    megapixels = pixels / 1_000_000
    return f"{megapixels:.0f}" if megapixels >= 100 else f"{megapixels:.3g}"
