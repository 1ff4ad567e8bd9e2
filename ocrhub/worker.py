"""An RQ worker that loads the OCR engine once and runs jobs in its own process (no fork per job)."""

from __future__ import annotations

import importlib
import logging

import redis
from PIL import Image
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from ocr_core.engines import get_engine
from ocr_core.errors import PermanentError
from ocr_core.queue import DELIVER, all_queues
from ocr_core.sources import FETCHERS
from ocrhub.settings import Settings
from sinks.base import SCHEMES

log = logging.getLogger(__name__)


def stop_retrying_permanent_errors(job, exc_type, exc_value, traceback) -> bool:  # noqa: ANN001
    """RQ exception handler: a PermanentError goes straight to the failed-job registry."""
    if isinstance(exc_value, PermanentError):
        job.retries_left = 0
    return True


def build_worker(conn: redis.Redis, settings: Settings, name: str | None = None) -> SimpleWorker:
    # SimpleWorker, not the forking Worker: the engine's ONNX sessions and thread pools live in
    # this process and stay warm across jobs; forking after they exist is unsafe and reloads nothing.
    return SimpleWorker(
        all_queues(conn, settings),
        connection=conn,
        serializer=JSONSerializer,
        exception_handlers=[stop_retrying_permanent_errors],
        name=name,
    )


def warm_up(settings: Settings) -> None:
    """Pay every one-time cost before taking a job: model load, first inference, SDK imports."""
    engine = get_engine(settings.ocr_engine, settings.threads_per_engine)
    engine.recognise(Image.new("RGB", (320, 64), "white"))
    for path in (*FETCHERS.values(), *SCHEMES.values(), DELIVER):
        module_name = path.partition(":")[0] if ":" in path else path.rpartition(".")[0]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            log.warning("cannot preload %s: %s", module_name, exc)


def run_worker(conn: redis.Redis, settings: Settings, *, burst: bool = False, name: str | None = None) -> bool:
    logging.getLogger("rq.worker").setLevel(settings.log_level)
    warm_up(settings)
    worker = build_worker(conn, settings, name)
    return worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
