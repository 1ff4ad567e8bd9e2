"""Engine registry: an alias table plus a dotted-path escape hatch, as rq resolves serializers."""

from __future__ import annotations

import importlib
import math
import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from ocr_core.job import Line


@runtime_checkable
class Engine(Protocol):
    """Reads one RGB image that fits the engine's comfortable size; tiling happens above it."""

    name: str

    def recognise(self, image: Image.Image) -> list[Line]: ...


@dataclass(frozen=True)
class ReadRequest:
    """What an engine that reads whole pages may want to know about the image besides its pixels."""

    task: str = "text"
    fair_key: str = ""  # whose turn it is when many wait: a chat, so one chat's flood does not starve others
    deadline: float = math.inf  # time.monotonic() by which the reading must be done


@dataclass(frozen=True)
class PageReading:
    lines: list[Line]
    engine: str  # which engine read it: a fallback says so


@runtime_checkable
class PageEngine(Protocol):
    """An engine that takes the whole normalised image and does its own layout (a vision-language model)."""

    name: str

    def read(self, image: Image.Image, request: ReadRequest) -> PageReading: ...


ENGINES: dict[str, str] = {
    "rapidocr": "ocr_core.engines.rapidocr:RapidOcrEngine",
    "vllm": "ocr_core.engines.vllm:VllmEngine",
}

_loaded: dict[tuple[str, int], Engine] = {}
_lock = threading.Lock()


def resolve_engine_class(name: str) -> type:
    """`name` is an alias from ENGINES or a `package.module:Class` path."""
    path = ENGINES.get(name, name)
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(
            f"unknown OCR engine {name!r}: use one of {sorted(ENGINES)} or a 'package.module:Class' path "
            "(setting OCRHUB_OCR_ENGINE)"
        )
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load OCR engine {name!r} from {path!r}: {exc} (setting OCRHUB_OCR_ENGINE)") from exc


def get_engine(name: str, threads: int = 0) -> Engine:
    """The engine for this process, loaded once: models are costly to load, cheap to reuse."""
    key = (name, threads)
    with _lock:
        engine = _loaded.get(key)
        if engine is None:
            engine = resolve_engine_class(name)(threads=threads)
            _loaded[key] = engine
        return engine
