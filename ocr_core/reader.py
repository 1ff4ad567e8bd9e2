"""Image bytes to recognised lines: the one path the CLI and the queue worker share."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from ocr_core.engines import Engine, PageEngine, ReadRequest
from ocr_core.image import check_file_size, normalise
from ocr_core.job import Line
from ocr_core.tiling import read_tiled
from ocrhub.settings import Settings

__all__ = ["Reading", "read_bytes", "read_file"]


@dataclass(frozen=True)
class Reading:
    """What one image said: lines in reading order and page pixels of the upright image."""

    lines: tuple[Line, ...]
    width: int
    height: int
    sha256: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "normalise", "recognise"
    engine: str = ""  # the engine that read it

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def read_bytes(data: bytes, engine: Engine | PageEngine, settings: Settings, request: ReadRequest | None = None) -> Reading:
    """Normalise `data` and read it whole (tiled as `settings` says, unless the engine takes whole
    pages); raises `ImageError` for bad input."""
    digest = hashlib.sha256(data).hexdigest()
    started = time.perf_counter()
    image = normalise(data, max_pixels=settings.max_image_pixels, max_bytes=settings.max_image_bytes)
    normalised = time.perf_counter()
    if isinstance(engine, PageEngine):
        page = engine.read(image, request or ReadRequest(task=settings.vllm_task))
        lines, engine_name = page.lines, page.engine
    else:
        lines = read_tiled(image, engine.recognise, tile_size=settings.tile_size, overlap=settings.tile_overlap)
        engine_name = engine.name
    finished = time.perf_counter()
    return Reading(
        lines=tuple(lines),
        width=image.width,
        height=image.height,
        sha256=digest,
        timings={"normalise": normalised - started, "recognise": finished - normalised},
        engine=engine_name,
    )


def read_file(path: str | Path, engine: Engine | PageEngine, settings: Settings) -> Reading:
    """`read_bytes` for a file on disk; a file over the byte limit is refused without reading it."""
    path = Path(path)
    check_file_size(path.stat().st_size, max_bytes=settings.max_image_bytes)
    return read_bytes(path.read_bytes(), engine, settings)
