"""Untrusted image bytes in, one upright RGB picture out, or an `ImageError` a chat user can act on."""

from __future__ import annotations

import ctypes
import functools
import io
import logging
import re
import struct
import warnings
from pathlib import Path
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

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
)
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
_OTHER_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript file"),
    (b"PK\x03\x04", "a ZIP archive or Office document"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an older Office document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
    (b"OggS", "an audio file"),
    (b"ID3", "an audio file"),
)
# Pillow recognises these from a few bytes that much else also starts with (a TGA picture
# looks like a cursor file); for them we say only "not in a supported format".
_LOOSE_SIGNATURES = ("CUR", "DIB", "GBR", "WMF")
# Codecs every libtiff decodes; a TIFF compressed otherwise may fail only for want of its codec.
_BASELINE_TIFF_COMPRESSIONS = (
    "raw", "tiff_raw_16", "packbits", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate",
    "jpeg", "tiff_jpeg", "tiff_ccitt", "group3", "group4",
)  # fmt: skip
_PIXEL_SETTING = "OCRHUB_MAX_IMAGE_PIXELS"
_BYTES_SETTING = "OCRHUB_MAX_IMAGE_BYTES"


def normalise(data: bytes, *, max_pixels: int, max_bytes: int) -> Image.Image:
    """Decode `data` fully and return its first frame as an upright RGB image.

    EXIF orientation is applied, transparency is flattened onto whichever of white or black
    contrasts with the visible pixels, and every colour mode becomes 8-bit RGB. Raises
    `ImageError` with a one-line message for empty, oversized, truncated, corrupt, bomb-sized,
    unsupported or non-image input, and RuntimeError if something in the process set
    `PIL.ImageFile.LOAD_TRUNCATED_IMAGES`. `max_pixels` also becomes Pillow's own
    `Image.MAX_IMAGE_PIXELS`, so that it governs above Pillow's default of ~89 MP too.
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
        raise ImageError("the file is empty", "empty")
    if size > max_bytes:
        raise ImageError(f"the file is {_file_size(size)}, over the {_file_size(max_bytes)} limit ({_BYTES_SETTING})", "too_large")


@functools.cache
def _prepare_pillow() -> tuple[str, ...]:
    """Once per process: register the HEIF decoder, quiet Pillow's chatter about bad files, and
    name the decoders `normalise` may use."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    Image.init()
    _quiet_decoder_chatter()
    # Pillow raises KeyError for a format it lacks (AVIF arrived in 11.3), so ask only for known ones.
    return tuple(name for name in FORMATS if name in Image.OPEN)


def _quiet_decoder_chatter() -> None:
    # Besides the exception that becomes an ImageError, Pillow describes a malformed file through
    # Python warnings ("Corrupt EXIF data", "Invalid APNG"), a log record (an absurd TIFF
    # samples-per-pixel) and libtiff's own messages on stderr; in a worker each would be a stray
    # line in the hub's log, without the job it belongs to. The worker decodes in several threads,
    # and warnings.catch_warnings() or redirecting fd 2 around a decode would race between them,
    # so each channel is closed once for the whole process instead.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    # Raised above our own limit only (see _decode), where an ImageError follows at once.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    pillow_log = logging.getLogger("PIL")
    if pillow_log.level == logging.NOTSET:
        pillow_log.setLevel(logging.CRITICAL)
    for libtiff in _loaded_libtiffs():
        # Pillow itself sets libtiff's warning handler to none before each decode, but not its
        # error handler; Pillow learns of every error from return codes anyway.
        libtiff.TIFFSetErrorHandler(None)
        libtiff.TIFFSetErrorHandlerExt(None)


def _loaded_libtiffs() -> list[ctypes.CDLL]:
    """The libtiff libraries loaded in this process (Pillow's among them), found on Linux only.

    Opening an already loaded file again returns the same library, whose handlers are the ones
    Pillow's decoder uses. Elsewhere, or with a libtiff linked statically into Pillow, libtiff's
    error messages still reach stderr: nothing else changes.
    """
    from PIL import _imaging  # noqa: F401 - loads libtiff where Pillow links it as a shared library

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = {line.split(maxsplit=5)[5] for line in maps.splitlines() if line.count(" ") >= 5 and "/libtiff" in line}
    libraries = []
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
            for name in ("TIFFSetErrorHandler", "TIFFSetErrorHandlerExt"):
                getattr(library, name).argtypes = [ctypes.c_void_p]
                getattr(library, name).restype = ctypes.c_void_p
        except (OSError, AttributeError):
            continue
        libraries.append(library)
    return libraries


def _decode(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # With this flag Pillow pads a cut-off upload with grey and reports success; some
        # import in this process turned it on, and we must not read half pictures.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True; truncated images would be accepted")
    formats = _prepare_pillow()
    # Pillow refuses an image over twice its own limit while opening it, before we see its size,
    # and checks again inside some decoders (a WebP canvas, GIF frames, TIFF tiles). Its limit is
    # set to ours, so that ours governs whether above or below Pillow's default of ~89 MP; every
    # worker thread writes the same value. Between 1× and 2× it only warns (ignored, see
    # _quiet_decoder_chatter) and _check_size refuses the image before any pixel is decoded.
    if Image.MAX_IMAGE_PIXELS != max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    image: ImageFile.ImageFile | None = None
    try:
        image = Image.open(io.BytesIO(data), formats=formats)
        _check_size(image.size, max_pixels)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception only where warnings were made errors.
        raise ImageError(_bomb_message(str(exc), max_pixels), "too_large") from None
    except UnidentifiedImageError:
        raise ImageError(_unidentified_message(data), "not_an_image") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(_undecodable_message(image, data, exc), "damaged") from exc
    return image


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"the image has no pixels ({width}×{height})", "damaged")
    if width * height > max_pixels:
        raise ImageError(
            f"the image is {width}×{height} = {_megapixels(width * height)} MP, "
            f"over the {_megapixels(max_pixels)} MP limit ({_PIXEL_SETTING})",
            "too_large",
        )


def _bomb_message(detail: str, max_pixels: int) -> str:
    # Pillow refuses before we see the size, and says only the pixel count.
    found = re.search(r"\((\d+) pixels\)", detail)
    limit = f"the {_megapixels(max_pixels)} MP limit ({_PIXEL_SETTING})"
    if found is None:
        return f"the image is over {limit}"
    return f"the image is {_megapixels(int(found.group(1)))} MP, over {limit}"


def _undecodable_message(image: ImageFile.ImageFile | None, data: bytes, exc: BaseException) -> str:
    found = (image.format if image is not None else None) or _magic_format(data) or ""
    kind = {"MPO": "JPEG ", "HEIF": "HEIC "}.get(found, f"{found} " if found else "")
    detail = (str(exc).splitlines() or [""])[0].strip()
    if detail.lower().startswith("unsupported"):
        # Pillow's words for a real file in a variant it does not decode ("Unsupported BMP
        # bitfields layout"): more use to the sender than "corrupt".
        return f"the {kind}image cannot be read: {detail[0].lower()}{detail[1:80]}"
    if "MAX_TEXT_" in detail:
        # PNG text chunks that inflate past Pillow's MAX_TEXT_CHUNK or MAX_TEXT_MEMORY.
        return f"the {kind}image carries oversized metadata (a decompression bomb?)"
    compression = image.info.get("compression") if image is not None and found == "TIFF" else None
    if isinstance(compression, str) and compression not in _BASELINE_TIFF_COMPRESSIONS:
        return f"the TIFF image is truncated, corrupt, or compressed in a way that cannot be read ({compression})"
    return f"the {kind}image is truncated or corrupt"


def _magic_format(data: bytes) -> str | None:
    head = data[:16]
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "AVIF" if head[8:12] in (b"avif", b"avis") else "HEIF"
    return None


def _unidentified_message(data: bytes) -> str:
    head = data[:16]
    found = _magic_format(data)
    if found is not None:
        kind = {"HEIF": "HEIC "}.get(found, f"{found} ")
        return f"the {kind}image is truncated or corrupt"
    if head[4:8] == b"ftyp":
        return f"not an image (it looks like a video); send a {_FORMAT_NAMES} picture"
    kind = _sniff(data)
    if kind is not None:
        return f"not an image (it looks like {kind}); send a {_FORMAT_NAMES} picture"
    other = _other_image_format(head)
    if other is not None:
        return f"unsupported image format ({other}); send a {_FORMAT_NAMES} picture"
    return f"not an image, or not in a supported format; send a {_FORMAT_NAMES} picture"


def _other_image_format(head: bytes) -> str | None:
    """Pillow's description of an image format we do not decode, recognised from the first bytes
    only (its plugins' signature checks, which parse nothing)."""
    for name, (factory, accept) in Image.OPEN.items():
        if name in FORMATS or name in _LOOSE_SIGNATURES or accept is None:
            continue
        try:
            recognised = accept(head)
        except Exception:  # noqa: BLE001 - a signature check that trips over odd bytes is a no
            continue
        if recognised:  # a string too: "recognised, but this Pillow build cannot decode it"
            description = str(getattr(factory, "format_description", None) or name)
            return description.split(" (")[0]  # "JPEG 2000 (ISO 15444)"
    return None


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
    # white; map the range actually used onto 0..255 instead. Works in place where it can:
    # at the pixel limit each full-size float copy is a quarter of a gigabyte.
    values = np.asarray(image)
    finite: np.ndarray | bool = True
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.any():
            return Image.new("L", image.size, 0)
        low = float(values.min(where=finite, initial=np.inf))
        high = float(values.max(where=finite, initial=-np.inf))
    else:
        low, high = float(values.min()), float(values.max())
    scaled = np.zeros(values.shape, dtype=np.float32)
    if high > low:
        np.subtract(values, low, out=scaled, where=finite)
        scaled *= 255.0 / (high - low)
        np.clip(scaled, 0, 255, out=scaled)
        np.rint(scaled, out=scaled)
    return Image.fromarray(scaled.astype(np.uint8), "L")


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
