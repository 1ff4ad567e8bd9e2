"""The job a worker runs for each image: fetch once, read (or reuse a cached reading), hand to sinks.

The image bytes stay in Redis while this job may run again and while a delivery may need them
(see `ocr_core.store`): once the result is handed on, the job lets go of them.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import redis
from rq import get_current_job

from ocr_core import queue, reader, sources, store
from ocr_core.engines import Engine, PageEngine, ReadRequest, get_engine
from ocr_core.errors import Deferred, ImageError, PermanentError
from ocr_core.job import ImageJob, OcrResult
from ocr_core.routes import sinks_for, task_for
from ocrhub.live_config import live_settings
from ocrhub import metrics
from ocrhub.settings import Settings, get_settings

OCR_SECONDS = "ocrhub_ocr_seconds"
OCR_TOTAL = "ocrhub_ocr_total"


def process(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entry point, enqueued as "ocr_core.pipeline.process" with `ImageJob.to_dict()`."""
    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("ocr_core.pipeline.process runs inside an RQ worker")
    job, conn, settings = ImageJob.from_dict(payload), rq_job.connection, get_settings()
    try:
        outcome = run(job, conn, settings)
    except Exception as exc:
        if queue.fails_for_good(rq_job, exc):
            # An admin may requeue it from the failed registry: its bytes stay, for a bounded while.
            store.release_image(conn, job.job_id, store.READER, keep_for=settings.failed_blob_ttl)
        raise
    store.release_image(conn, job.job_id, store.READER)
    return outcome.summary()


class Outcome:
    def __init__(self, result: OcrResult, sinks: tuple[str, ...], cached: bool) -> None:
        self.result, self.sinks, self.cached = result, sinks, cached

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.result.job.job_id,
            "lines": len(self.result.lines),
            "chars": len(self.result.text),
            "engine": self.result.engine,
            "cached": self.cached,
            "sinks": list(self.sinks),
            "error": self.result.error,
        }


def run(job: ImageJob, conn: redis.Redis, settings: Settings) -> Outcome:
    started = time.perf_counter()
    # Leave the job's last seconds to store the result and queue the deliveries.
    deadline = time.monotonic() + settings.job_timeout * 0.85
    data = store.load_image(conn, job)
    error, error_kind = "", ""
    if data is None:
        try:
            data = sources.fetch(job, conn)
        except PermanentError as exc:
            # The platform will never hand over these bytes: sinks hear why, as for an unreadable image.
            data, error, error_kind = b"", str(exc), getattr(exc, "kind", "unavailable")
        else:
            store.save_image(conn, job.job_id, data, settings.blob_ttl)
    fetched = time.perf_counter()

    digest = store.sha256(data)
    engine_name = settings.ocr_engine
    task = task_for(job, live_settings(settings, conn).tasks, settings.vllm_task)  # tasks saved on the admin page too
    # A reading answers one question: the same bytes asked for Markdown are not the same as plain text.
    cache_name = engine_name if task == "text" else f"{engine_name}:{task}"
    cached = None if error else store.cached_reading(conn, cache_name, digest)
    timings = {"fetch": fetched - started}
    if error:
        lines, width, height = (), 0, 0
    elif cached is not None:
        lines, width, height = cached
    else:
        request = ReadRequest(task=task, fair_key=f"{job.platform}:{job.bot_id}:{job.chat_id}", deadline=deadline)
        engine = get_engine(engine_name, settings.threads_per_engine)
        try:
            reading = _read_counted(conn, data, engine, settings, request)
        except ImageError as exc:
            lines, width, height, error, error_kind = (), 0, 0, str(exc), exc.kind
        else:
            lines, width, height = reading.lines, reading.width, reading.height
            timings.update(reading.timings)
            if reading.engine != engine.name:
                engine_name = reading.engine  # a fallback read it: say so, and do not cache it as the engine's
            else:
                store.cache_reading(conn, cache_name, digest, lines, width, height, settings.cache_ttl)

    result = OcrResult(
        job=job,
        text="\n".join(line.text for line in lines),
        lines=lines,
        engine=engine_name,
        image_sha256=digest,
        width=width,
        height=height,
        timings=timings,
        error=error,
        error_kind=error_kind,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    store.save_result(conn, result, settings.blob_ttl)
    sinks = sinks_for(job, live_settings(settings, conn).routes)  # routes saved on the admin page too
    if result.ok:
        # Before the deliveries exist, so that none can finish before its hold is counted.
        store.hold_image(conn, job.job_id, [store.delivery_holder(sink) for sink in sinks], settings.blob_ttl)
    for sink in sinks:
        queue.enqueue_delivery(conn, job.job_id, sink, settings)
    if error:
        # Sinks still hear why (a chat user gets a reason, not silence); the job itself fails for good.
        raise ImageError(error)
    return Outcome(result, sinks, cached is not None)


def _read_counted(conn: redis.Redis, data: bytes, engine: Engine | PageEngine, settings: Settings, request: ReadRequest) -> reader.Reading:
    """`reader.read_bytes`, timed and counted by engine for /metrics."""
    started = time.perf_counter()
    try:
        reading = reader.read_bytes(data, engine, settings, request)
    except Deferred:
        raise  # not now, and no fault of the engine's: the job runs again later
    except ImageError:
        metrics.count(conn, OCR_TOTAL, {"engine": engine.name, "outcome": "image_error"})
        raise
    except Exception:
        metrics.count(conn, OCR_TOTAL, {"engine": engine.name, "outcome": "error"})
        raise
    metrics.observe(conn, OCR_SECONDS, {"engine": reading.engine}, time.perf_counter() - started)
    metrics.count(conn, OCR_TOTAL, {"engine": reading.engine, "outcome": "ok"})
    return reading
