"""Image bytes to recognised lines: the one path the CLI and the queue worker share."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ocr_core import pdf
from ocr_core.engines import Engine, PageEngine, ReadRequest
from ocr_core.image import check_file_size, normalise
from ocr_core.job import Line
from ocr_core.layout import page_order
from ocr_core.pdf import is_pdf
from ocr_core.orientation import Orientable, page_turn, upright
from ocr_core.tiling import plan_tiles, read_tiled
from ocr_core.watermark import without_watermarks
from ocrhub.settings import Settings

__all__ = ["Reading", "read_bytes", "read_file"]


@dataclass(frozen=True)
class Reading:
    """What one image said: lines in reading order, and the size of the image they were read in: the
    normalised image turned by `turned` degrees anticlockwise, so its text was upright."""

    lines: tuple[Line, ...]
    width: int
    height: int
    sha256: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "normalise", "recognise"
    engine: str = ""  # the engine that read it
    turned: int = 0

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def read_bytes(data: bytes, engine: Engine | PageEngine, settings: Settings, request: ReadRequest | None = None) -> Reading:
    """Normalise `data` and read it whole (tiled as `settings` says, unless the engine takes whole
    pages); a PDF is read page by page. Raises `ImageError` for bad input."""
    digest = hashlib.sha256(data).hexdigest()
    started = time.perf_counter()
    if is_pdf(data):
        return _read_pdf(data, digest, started, engine, settings, request)
    image = normalise(data, max_pixels=settings.max_image_pixels, max_bytes=settings.max_image_bytes)
    normalised = time.perf_counter()
    image, turned, lines, engine_name = _read_image(image, engine, settings, request)
    finished = time.perf_counter()
    return Reading(
        lines=tuple(lines),
        width=image.width,
        height=image.height,
        sha256=digest,
        timings={"normalise": normalised - started, "recognise": finished - normalised},
        engine=engine_name,
        turned=turned,
    )


def _read_image(
    image: Image.Image, engine: Engine | PageEngine, settings: Settings, request: ReadRequest | None
) -> tuple[Image.Image, int, list[Line], str]:
    """The image as read (upright), the degrees it was turned, its lines in reading order, and the engine's name."""
    if isinstance(engine, PageEngine):
        page = engine.read(image, request or ReadRequest(task=settings.vllm_task))
        return image, 0, list(page.lines), page.engine
    image, turned, lines = _read_upright(image, engine, settings)
    kept = without_watermarks(lines, image)
    return image, turned, (page_order(kept) if len(kept) < len(lines) else lines), engine.name


def _read_pdf(
    data: bytes, digest: str, started: float, engine: Engine | PageEngine, settings: Settings, request: ReadRequest | None
) -> Reading:
    """Every page read as a picture, one below the other: lines carry their page's offset, so the
    reading is that of one tall image of the pages stacked."""
    lines: list[Line] = []
    width = height = 0
    rendering = 0.0
    engine_name = getattr(engine, "name", "")
    rendered_at = time.perf_counter()
    for page in pdf.pages(data, settings.max_pdf_pages):
        rendering += time.perf_counter() - rendered_at
        page, _turned, found, engine_name = _read_image(page, engine, settings, request)
        lines += [_moved_down(line, height) for line in found]
        width, height = max(width, page.width), height + page.height
        rendered_at = time.perf_counter()
    finished = time.perf_counter()
    return Reading(
        lines=tuple(lines),
        width=width,
        height=height,
        sha256=digest,
        timings={"normalise": rendering, "recognise": finished - started - rendering},
        engine=engine_name,
    )


def _moved_down(line: Line, dy: float) -> Line:
    return Line(text=line.text, box=tuple((x, y + dy) for x, y in line.box), score=line.score)  # type: ignore[arg-type]


def _read_upright(image: Image.Image, engine: Engine, settings: Settings) -> tuple[Image.Image, int, list[Line]]:
    """Turn the page upright if its text is turned, then read it tile by tile: the upright image,
    the degrees it was turned (anticlockwise) and its lines."""
    tiling = {"tile_size": settings.tile_size, "overlap": settings.tile_overlap}
    if not isinstance(engine, Orientable):
        return image, 0, read_tiled(image, engine.recognise, **tiling)
    # Decided before tiling, since a tile's edge must cut across lines, never along them; from the
    # first tile, which an upright page (the common case) then need not detect again.
    first = plan_tiles(image.width, image.height, **tiling)[0][0]
    detection = engine.detect(image if first.box == (0, 0, image.width, image.height) else image.crop(first.box))
    turned = page_turn(detection, engine)
    if turned:
        image = upright(image, turned)
        return image, turned, read_tiled(image, engine.recognise, **tiling)
    return image, 0, read_tiled(image, engine.recognise, **tiling, known={first.box: engine.recognise_detected(detection)})


def read_file(path: str | Path, engine: Engine | PageEngine, settings: Settings) -> Reading:
    """`read_bytes` for a file on disk; a file over the byte limit is refused without reading it."""
    path = Path(path)
    check_file_size(path.stat().st_size, max_bytes=settings.max_image_bytes)
    return read_bytes(path.read_bytes(), engine, settings)
