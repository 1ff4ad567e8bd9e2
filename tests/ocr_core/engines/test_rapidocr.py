"""The embedded engine: where it looks for lines at half size, and where it must not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ocr_core.engines.rapidocr import DETECT_SCALE, RapidOcrEngine
from tests.imagegen import text_image


class CountingEngine(RapidOcrEngine):
    """The engine, noting the scale of every detector run."""

    def __init__(self) -> None:
        super().__init__(threads=1)
        self.scales: list[float] = []

    def _detect_at(self, prepared: np.ndarray, record: dict, scale: float):  # type: ignore[no-untyped-def]
        self.scales.append(scale)
        return super()._detect_at(prepared, record, scale)


@pytest.fixture(scope="module")
def engine() -> CountingEngine:
    return CountingEngine()


def read(engine: CountingEngine, image: Image.Image) -> list[str]:
    engine.scales.clear()
    return [line.text for line in engine.recognise(image)]


def test_screenshot_sized_text_is_found_at_half_size_in_one_run(engine: CountingEngine) -> None:
    lines = ["Meeting moved to 3pm, room 401", "Invoice INV-2024-0815 total 1,280.00", "Please file expenses by Friday"]
    assert read(engine, text_image(lines, size=30)) == lines
    assert engine.scales == [DETECT_SCALE]


@pytest.mark.parametrize("size", [11, 13, 16])
def test_small_text_is_searched_again_at_full_size(engine: CountingEngine, size: int) -> None:
    lines = ["status: build 4521 passed", "owner alice@example.com"]
    assert read(engine, text_image(lines, size=size, margin=12)) == lines
    assert engine.scales == [DETECT_SCALE, 1.0]


def test_a_page_with_nothing_found_at_half_size_is_searched_at_full_size(engine: CountingEngine) -> None:
    assert read(engine, Image.new("RGB", (640, 480), "white")) == []
    assert engine.scales == [DETECT_SCALE, 1.0]


def test_full_size_lines_are_read_in_image_coordinates(engine: CountingEngine) -> None:
    image = Image.new("RGB", (900, 500), "white")
    image.paste(text_image(["found where it stands"], size=30, margin=0), (400, 300))
    (line,) = engine.recognise(image)
    assert line.text == "found where it stands"
    assert 390 <= line.left <= 410 and 290 <= line.top <= 310

