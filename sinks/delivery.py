"""The delivery job: one per (image, sink), so a failing sink never holds back the others."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from ocr_core import store
from ocr_core.errors import PermanentError
from ocrhub.settings import get_settings
from sinks.base import SinkContext, get_sink


def deliver(job_id: str, sink_name: str) -> dict[str, Any]:
    """RQ entry point, enqueued as "sinks.delivery.deliver" by the pipeline."""
    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("sinks.delivery.deliver runs inside an RQ worker")
    conn = rq_job.connection
    result = store.load_result(conn, job_id)
    if result is None:
        raise PermanentError(f"the result of job {job_id} has expired from Redis; re-submit the image")
    sink = get_sink(sink_name, SinkContext(get_settings(), conn))
    image = store.load_image(conn, result.job) if sink.needs_image else None
    where = sink.deliver(result, image)
    return {"job_id": job_id, "sink": sink_name, "delivered": where}
