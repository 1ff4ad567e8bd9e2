"""The readers the quality set compares, each a function from the posted bytes to text in reading order."""

from __future__ import annotations

from collections.abc import Callable

from ocr_core.engines import get_engine
from ocr_core.reader import read_bytes
from ocrhub.settings import Settings

__all__ = ["READERS", "Reader", "ocrhub", "raw_rapidocr"]

Reader = Callable[[bytes], str]


def ocrhub() -> Reader:
    """What `ocrhub ocr FILE` prints with default settings (no `.env`): the workers' normalisation,
    tiling and layout over the embedded RapidOCR engine."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    engine = get_engine("rapidocr", settings.engine_threads)
    return lambda data: read_bytes(data, engine, settings).text


def raw_rapidocr() -> Reader:
    """The `rapidocr` package as its README calls it, defaults and all, on the same bytes; its lines
    joined in the order it returns them."""
    from rapidocr import RapidOCR

    engine = RapidOCR(params={"Global.log_level": "error"})  # quiet; reading is as by default

    def read(data: bytes) -> str:
        return "\n".join(engine(data).txts or ())

    return read


READERS: dict[str, Callable[[], Reader]] = {"ocrhub": ocrhub, "rapidocr": raw_rapidocr}
