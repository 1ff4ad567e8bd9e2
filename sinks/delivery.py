"""The delivery job: one per (image, sink), so a failing sink never holds back the others.

Each delivery of a readable result holds the image bytes (`ocr_core.store`) until it is done for
good: delivered, or failed with no retry left. A sink that never looks at the image lets go at once.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import redis
from rq import get_current_job

from ocr_core import store
from ocr_core.errors import PermanentError
from ocr_core.job import OcrResult
from ocr_core.queue import fails_for_good
from ocrhub import metrics
from ocrhub.settings import Settings, get_settings
from ocrhub.live_config import live_settings
from sinks.base import SCHEMES, SinkConfigError, SinkContext, get_sink, sink_url_for

DELIVERIES = "ocrhub_deliveries_total"

log = logging.getLogger(__name__)


def deliver(job_id: str, sink_name: str) -> dict[str, Any]:
    """RQ entry point, enqueued as "sinks.delivery.deliver" by the pipeline."""
    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("sinks.delivery.deliver runs inside an RQ worker")
    conn, settings = rq_job.connection, get_settings()
    holder = store.delivery_holder(sink_name)
    labels = {"sink": sink_label(sink_name, live_settings(settings, conn))}
    try:
        where, result = _deliver(conn, settings, job_id, sink_name)
    except Exception as exc:
        last = fails_for_good(rq_job, exc)
        metrics.count(conn, DELIVERIES, {**labels, "outcome": "failed" if last else "retry"})
        if last:
            # An admin may requeue it from the failed registry: the bytes stay, for a bounded while.
            store.release_image(conn, job_id, holder, keep_for=settings.failed_blob_ttl)
        raise
    store.release_image(conn, job_id, holder)
    store.note_receipt(conn, job_id, sink_name, where, settings.cache_ttl)
    metrics.count(conn, DELIVERIES, {**labels, "outcome": "ok"})
    bring_up_to_date(conn, settings, result)
    return {"job_id": job_id, "sink": sink_name, "delivered": where}


def _deliver(conn: redis.Redis, settings: Settings, job_id: str, sink_name: str) -> tuple[str, OcrResult]:
    result = store.load_result(conn, job_id)
    if result is None:
        raise PermanentError(f"the result of job {job_id} has expired from Redis; re-submit the image")
    sink = get_sink(sink_name, SinkContext(live_settings(settings, conn), conn))  # sinks saved on the admin page too
    if not (sink.needs_image and result.ok):
        store.release_image(conn, job_id, store.delivery_holder(sink_name))
        return sink.deliver(result, None), result
    return sink.deliver(result, store.load_image(conn, result.job)), result


def bring_up_to_date(conn: redis.Redis, settings: Settings, result: OcrResult) -> None:
    """Let each sink that already delivered this job and shows where the others did (the Feishu card
    links the Notion row) catch up. Called after every delivery, once its receipt is noted, so
    whichever delivery finishes last sees the other's receipt. Best effort: the delivery stands."""
    job_id = result.job.job_id
    context = SinkContext(live_settings(settings, conn), conn)
    for name in store.receipts(conn, [job_id]).get(job_id, {}):
        try:
            amend = getattr(get_sink(name, context), "amend", None)
        except SinkConfigError:
            continue  # a sink since removed from the configuration
        if amend is None:
            continue
        try:
            amend(result)
        except Exception as exc:  # noqa: BLE001 - a link missing from a card must not fail a delivery
            log.warning("sink %r could not show where job %s also went: %s", name, job_id, exc)


def sink_label(sink_name: str, settings: Settings) -> str:
    """The sink's URL scheme (local, feishu-reply, notion): a metric label from a small set, whatever sinks are named."""
    try:
        scheme = urlsplit(sink_url_for(sink_name, settings)).scheme
    except SinkConfigError:
        return "unknown"
    return scheme if scheme in SCHEMES else "unknown"
