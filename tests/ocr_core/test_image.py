"""normalise() on every mode, format and hostile input a chat can deliver; readable results are checked by real OCR."""

from __future__ import annotations

import io
import random

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageFile

from ocr_core.engines import Engine, get_engine
from ocr_core.errors import ImageError
from ocr_core.image import normalise
from tests.imagegen import bomb_png, encode, png_claiming, text_image, words

LIMITS = {"max_pixels": 60_000_000, "max_bytes": 30 * 1024 * 1024}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return get_engine("rapidocr", threads=0)


def read(engine: Engine, image: Image.Image) -> str:
    return " ".join(line.text for line in engine.recognise(image)).lower()


def phrase(seed: int) -> tuple[str, str]:
    word = words(seed, 1)[0]
    number = str(random.Random(seed).randint(1000, 9999))
    return word, number


def assert_reads(engine: Engine, image: Image.Image, *expected: str) -> None:
    assert image.mode == "RGB"
    text = read(engine, image)
    for item in expected:
        assert item in text, f"{item!r} not in {text!r}"


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(engine: Engine, orientation: int) -> None:
    word, number = phrase(orientation)
    upright = text_image([f"{word} {number}"])
    # Store the pixels as a camera would, so that the tag's transform turns them upright.
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(upright.transpose(undo[orientation]), "JPEG", quality=92, exif=exif.tobytes())

    image = normalise(data, **LIMITS)

    assert image.size == upright.size
    assert np.abs(np.asarray(image, dtype=int) - np.asarray(upright, dtype=int)).mean() < 4
    assert_reads(engine, image, word, number)


def test_black_text_on_transparent_png_gets_a_white_background(engine: Engine) -> None:
    word, number = phrase(11)
    drawn = text_image([f"{word} {number}"], ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="RGBA")
    image = normalise(encode(drawn, "PNG"), **LIMITS)
    assert image.getpixel((2, 2)) == (255, 255, 255)
    assert_reads(engine, image, word, number)


def test_white_text_on_transparent_png_gets_a_dark_background(engine: Engine) -> None:
    word, number = phrase(12)
    # Transparent pixels stored as white: dropping alpha alone would leave white on white.
    drawn = text_image([f"{word} {number}"], ink=(255, 255, 255, 255), paper=(255, 255, 255, 0), mode="RGBA")
    image = normalise(encode(drawn, "PNG"), **LIMITS)
    assert image.getpixel((2, 2)) == (0, 0, 0)
    assert_reads(engine, image, word, number)


def test_palette_png_with_transparent_index(engine: Engine) -> None:
    word, number = phrase(13)
    image = text_image([f"{word} {number}"], ink=1, paper=0, mode="P")
    image.putpalette([0, 0, 0, 10, 10, 10] + [0] * 762)
    image = normalise(encode(image, "PNG", transparency=0), **LIMITS)
    assert image.getpixel((2, 2)) == (255, 255, 255)
    assert_reads(engine, image, word, number)


def test_palette_png_with_per_entry_alpha() -> None:
    image = Image.new("P", (40, 20), 0)
    image.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)
    image.paste(1, (10, 5, 30, 15))
    result = normalise(encode(image, "PNG", transparency=bytes([0, 255])), **LIMITS)
    assert result.getpixel((2, 2)) == (255, 255, 255)
    assert result.getpixel((20, 10)) == (0, 0, 0)


def test_la_image(engine: Engine) -> None:
    word, number = phrase(14)
    image = normalise(encode(text_image([f"{word} {number}"], ink=(0, 255), paper=(0, 0), mode="LA"), "PNG"), **LIMITS)
    assert image.getpixel((2, 2)) == (255, 255, 255)
    assert_reads(engine, image, word, number)


@pytest.mark.parametrize(("mode", "transparent"), [("L", 0), ("RGB", (0, 0, 0))])
def test_trns_chunk_in_l_and_rgb_png(mode: str, transparent: int | tuple[int, ...]) -> None:
    image = Image.new(mode, (40, 20), transparent)
    image.paste((30,) * len(image.getbands()), (10, 5, 30, 15))
    result = normalise(encode(image, "PNG", transparency=transparent), **LIMITS)
    assert result.getpixel((2, 2)) == (255, 255, 255)
    assert result.getpixel((20, 10)) == (30, 30, 30)


def test_fully_transparent_image_comes_back_blank() -> None:
    result = normalise(encode(Image.new("RGBA", (30, 30), (0, 0, 0, 0)), "PNG"), **LIMITS)
    assert result.getextrema() == ((255, 255),) * 3


def test_bilevel_image() -> None:
    image = Image.new("1", (40, 20), 1)
    image.paste(0, (10, 5, 30, 15))
    result = normalise(encode(image, "PNG"), **LIMITS)
    assert (result.getpixel((2, 2)), result.getpixel((20, 10))) == ((255, 255, 255), (0, 0, 0))


def test_cmyk_jpeg(engine: Engine) -> None:
    word, number = phrase(15)
    cmyk = text_image([f"{word} {number}"], ink=(0, 0, 0, 255), paper=(0, 0, 0, 0), mode="CMYK")
    image = normalise(encode(cmyk, "JPEG", quality=92), **LIMITS)
    assert min(image.getpixel((2, 2))) > 240  # type: ignore[arg-type]
    assert_reads(engine, image, word, number)


def test_16_bit_greyscale_uses_its_whole_range(engine: Engine) -> None:
    word, number = phrase(16)
    # Both values clip to white in Pillow's own I;16 → L conversion.
    layout = np.asarray(text_image([f"{word} {number}"], ink=0, paper=255, mode="L"))
    values = np.where(layout < 128, 2000, 60000).astype(np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"

    image = normalise(data, **LIMITS)

    assert image.getextrema() == ((0, 255),) * 3
    assert_reads(engine, image, word, number)


def test_16_bit_greyscale_with_trns_chunk() -> None:
    values = np.full((20, 40), 500, dtype=np.uint16)
    values[5:15, 10:30] = 40000
    result = normalise(encode(Image.fromarray(values), "PNG", transparency=500), **LIMITS)
    assert (result.getpixel((2, 2)), result.getpixel((20, 10))) == ((0, 0, 0), (255, 255, 255))


@pytest.mark.parametrize(("mode", "ink", "paper"), [("I", 70000, 250000), ("F", 0.0, 1.0)])
def test_32_bit_greyscale_tiff(engine: Engine, mode: str, ink: float, paper: float) -> None:
    # Pillow's own conversion clips both values to one grey (I) or to near-black (F).
    word, number = phrase(17 if mode == "I" else 18)
    layout = np.asarray(text_image([f"{word} {number}"], ink=0, paper=255, mode="L"))
    values = np.where(layout < 128, ink, paper).astype(np.int32 if mode == "I" else np.float32)

    image = normalise(encode(Image.fromarray(values, mode), "TIFF"), **LIMITS)

    assert image.getpixel((2, 2)) == (255, 255, 255)
    assert_reads(engine, image, word, number)


def test_float_image_with_nan_and_inf() -> None:
    values = np.array([[np.nan, 0.0], [np.inf, 2.0]], dtype=np.float32)
    result = normalise(encode(Image.fromarray(values, "F"), "TIFF"), **LIMITS)
    assert [result.getpixel(xy) for xy in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [(0, 0, 0)] * 3 + [(255, 255, 255)]


def test_animated_gif_gives_its_first_frame(engine: Engine) -> None:
    first, second = words(19, 2)
    frames = [text_image([f"{word} {word}"]).resize((560, 160)).convert("P") for word in (first, second)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=500, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2

    text = read(engine, normalise(data, **LIMITS))

    assert first in text
    assert second not in text


@pytest.mark.parametrize(
    ("format", "options"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 90}),
        ("WEBP", {"quality": 90}),
        ("BMP", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("GIF", {}),
        ("HEIF", {"quality": 90}),
    ],
)
def test_formats(engine: Engine, format: str, options: dict[str, object]) -> None:
    word, number = phrase(sum(map(ord, format)))
    if format == "HEIF":
        pillow_heif.register_heif_opener()
    image = normalise(encode(text_image([f"{word} {number}"]), format, **options), **LIMITS)
    assert_reads(engine, image, word, number)


def test_tiny_image_is_returned(engine: Engine) -> None:
    image = normalise(encode(Image.new("RGB", (1, 1), "white"), "PNG"), **LIMITS)
    assert image.size == (1, 1)
    assert engine.recognise(image) == []


def test_decompression_bomb_is_refused_without_decoding() -> None:
    data = bomb_png(20000, 20000)
    assert len(data) < 1_000_000
    with pytest.raises(ImageError, match=r"the image is 400 MP, over the 60 MP limit"):
        normalise(data, **LIMITS)


def test_pixel_limit_is_checked_from_the_header() -> None:
    # The pixel data is missing: decoding first would report a truncated image instead.
    with pytest.raises(ImageError, match=r"the image is 9000×9000 = 81 MP, over the 60 MP limit"):
        normalise(png_claiming(9000, 9000), **LIMITS)


def test_the_pixel_setting_governs_beyond_pillows_own_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # normalise sets it to the setting
    # Over twice Pillow's default limit (~89 MP), which would refuse it while opening: allowed,
    # the header passes and only the missing pixel data is reported.
    with pytest.raises(ImageError, match="the PNG image is truncated or corrupt"):
        normalise(png_claiming(15000, 15000), max_pixels=300_000_000, max_bytes=10**9)
    # Refused by Pillow itself (over twice the limit) or by the header check: both name the setting.
    with pytest.raises(ImageError, match=r"^the image is 225 MP, over the 100 MP limit \(OCRHUB_MAX_IMAGE_PIXELS\)$"):
        normalise(png_claiming(15000, 15000), max_pixels=100_000_000, max_bytes=10**9)
    with pytest.raises(ImageError, match=r"^the image is 15000×15000 = 225 MP, over the 200 MP limit \(OCRHUB_MAX_IMAGE_PIXELS\)$"):
        normalise(png_claiming(15000, 15000), max_pixels=200_000_000, max_bytes=10**9)


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "GIF", "HEIF"])
def test_truncated_image(format: str) -> None:
    pillow_heif.register_heif_opener()
    data = encode(text_image(["truncated"], ink=(200, 30, 30), paper=(30, 30, 200)), format)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        normalise(data[: len(data) * 2 // 3], **LIMITS)


def test_truncation_is_never_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        normalise(encode(Image.new("RGB", (4, 4)), "PNG"), **LIMITS)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\n", r"not an image \(it looks like a PDF document\)"),
        (b"\n<!DOCTYPE html>\n<html><head><title>Log in</title></head>", r"not an image \(it looks like an HTML web page\)"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', r"not an image \(it looks like an SVG drawing\)"),
        ("Meeting notes: ship on Friday. 周五发布。\n".encode(), r"not an image \(it looks like text\)"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(40), r"not an image \(it looks like a ZIP archive"),
        (b"\x00\x00\x00\x20ftypisom" + bytes(40), r"not an image \(it looks like a video\)"),
        (bytes(range(256)) * 4, r"not an image, or not in a supported format"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "the PNG image is truncated or corrupt"),
    ],
)
def test_refused_input(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        normalise(data, **LIMITS)


def test_file_over_the_byte_limit() -> None:
    data = encode(Image.new("RGB", (64, 64)), "BMP")
    with pytest.raises(ImageError, match=r"the file is 12\.1 KB, over the 10 KB limit"):
        normalise(data, max_pixels=10**6, max_bytes=10 * 1024)


def test_damaged_files_raise_only_image_error() -> None:
    pillow_heif.register_heif_opener()
    source = text_image(["damaged 1234"], ink=(10, 120, 10))
    rng = random.Random(2024)
    for format in ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "HEIF"):
        data = encode(source, format)
        for _ in range(40):
            damaged = bytearray(data)
            if rng.random() < 0.5:
                for _ in range(rng.randint(1, 8)):
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            else:
                del damaged[rng.randrange(8, len(damaged)) :]
            try:
                image = normalise(bytes(damaged), **LIMITS)
            except ImageError:
                continue
            assert image.mode == "RGB"
