"""read_bytes / read_file: normalise, tile and recognise with the real engine, and report what was read."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ocr_core.engines import Engine, get_engine
from ocr_core.errors import ImageError
from ocr_core.job import Line
from ocr_core.reader import Reading, read_bytes, read_file
from ocrhub.settings import Settings
from tests.imagegen import chat_capture, encode, text_image, words


@pytest.fixture(scope="module")
def engine() -> Engine:
    return get_engine("rapidocr", threads=0)


def make_settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_read_bytes_reports_lines_size_digest_and_timings(engine: Engine) -> None:
    first, second = words(31, 2)
    data = encode(text_image([f"{first} 4711", f"{second} 815"]), "PNG")

    reading = read_bytes(data, engine, make_settings())

    assert [line.text for line in reading.lines] == [f"{first} 4711", f"{second} 815"]
    assert reading.text == f"{first} 4711\n{second} 815"
    assert (reading.width, reading.height) == Image.open(io.BytesIO(data)).size
    assert reading.sha256 == hashlib.sha256(data).hexdigest()
    assert set(reading.timings) == {"normalise", "recognise"}
    assert all(seconds >= 0 for seconds in reading.timings.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        reading.width = 1  # type: ignore[misc]


def test_read_bytes_tiles_as_the_settings_say(engine: Engine) -> None:
    lines = {60 + 118 * index: f"row {index + 1}: {word}" for index, word in enumerate(words(32, 7))}
    image = chat_capture(lines, width=520, height=900, size=32)
    calls: list[tuple[int, int]] = []

    class Counting:
        name = "counting"

        def recognise(self, crop: Image.Image) -> list[Line]:
            calls.append(crop.size)
            return engine.recognise(crop)

    reading = read_bytes(encode(image, "PNG"), Counting(), make_settings(tile_size=400, tile_overlap=120))

    assert len(calls) == 3 and all(height <= 400 for _, height in calls)
    assert [line.text.replace(" ", "") for line in reading.lines] == [text.replace(" ", "") for text in lines.values()]


def test_read_bytes_refuses_bad_input_with_image_error(engine: Engine) -> None:
    with pytest.raises(ImageError, match="not an image"):
        read_bytes(b"<html><body>login</body></html>", engine, make_settings())


def test_read_bytes_uses_the_settings_limits(engine: Engine) -> None:
    data = encode(Image.new("RGB", (400, 300), "white"), "PNG")
    with pytest.raises(ImageError, match=r"400×300 = 0.12 MP, over the 0.1 MP limit"):
        read_bytes(data, engine, make_settings(max_image_pixels=100_000))


def test_read_file(engine: Engine, tmp_path: Path) -> None:
    word = words(33, 1)[0]
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(text_image([f"{word} 2024"]), "JPEG", quality=90))

    reading = read_file(path, engine, make_settings())

    assert isinstance(reading, Reading)
    assert reading.text == f"{word} 2024"
    assert reading.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_file_refuses_an_oversized_file_before_reading_it(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "huge.png"
    with path.open("wb") as handle:
        handle.truncate(3 * 1024 * 1024)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the oversized file was read"))

    with pytest.raises(ImageError, match=r"the file is 3 MB, over the 2 MB limit"):
        read_file(path, engine, make_settings(max_image_bytes=2 * 1024 * 1024))
