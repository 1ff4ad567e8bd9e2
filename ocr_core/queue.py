"""The RQ side: queues, retry policy, and enqueueing by dotted name with a JSON payload (no pickles)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timezone

import redis
from redis.client import Pipeline
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from ocr_core import store
from ocr_core.job import ImageJob
from ocrhub.settings import Settings

PROCESS = "ocr_core.pipeline.process"
DELIVER = "sinks.delivery.deliver"


def ocr_queue(conn: redis.Redis, settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=conn, serializer=JSONSerializer)


def delivery_queue(conn: redis.Redis, settings: Settings) -> Queue:
    return Queue(f"{settings.queue_name}-deliver", connection=conn, serializer=JSONSerializer)


def intake_queue(conn: redis.Redis, settings: Settings) -> Queue:
    """Cheap bookkeeping jobs (turning a webhook batch into image jobs) that must not wait behind OCR."""
    return Queue(f"{settings.queue_name}-intake", connection=conn, serializer=JSONSerializer)


def all_queues(conn: redis.Redis, settings: Settings) -> list[Queue]:
    """Intake, then delivery, then reading: a chat waits for work in flight before new work starts."""
    return [intake_queue(conn, settings), delivery_queue(conn, settings), ocr_queue(conn, settings)]


def retry_policy(settings: Settings) -> Retry | None:
    intervals = settings.retry_intervals
    return Retry(max=len(intervals), interval=list(intervals)) if intervals else None


def ocr_job_id(job_id: str) -> str:
    return f"ocr-{job_id}"


def delivery_job_id(job_id: str, sink: str) -> str:
    return f"deliver-{job_id}-{''.join(c if c.isalnum() or c in '_-' else '_' for c in sink)}"


def enqueue_image(
    conn: redis.Redis, job: ImageJob, settings: Settings, *, at_front: bool = False, pipeline: Pipeline | None = None
) -> Job:
    """With `pipeline`, nothing is queued until the caller executes it: several images go in all or none."""
    return ocr_queue(conn, settings).enqueue_call(
        PROCESS,
        args=(job.to_dict(),),
        job_id=ocr_job_id(job.job_id),
        timeout=settings.job_timeout,
        retry=retry_policy(settings),
        result_ttl=settings.blob_ttl,
        failure_ttl=settings.blob_ttl * 4,
        description=f"ocr {job.platform} chat={job.chat_id} message={job.message_id} image={job.index}",
        at_front=at_front,
        pipeline=pipeline,
    )


def enqueue_delivery(conn: redis.Redis, job_id: str, sink: str, settings: Settings) -> Job:
    return delivery_queue(conn, settings).enqueue_call(
        DELIVER,
        args=(job_id, sink),
        job_id=delivery_job_id(job_id, sink),
        timeout=settings.job_timeout,
        retry=retry_policy(settings),
        result_ttl=settings.blob_ttl,
        failure_ttl=settings.blob_ttl * 4,
        description=f"deliver {job_id} to {sink}",
    )


def submit_bytes(conn: redis.Redis, data: bytes, settings: Settings, *, source: str, name: str = "", routes: tuple[str, ...] = ()) -> ImageJob:
    """Store an uploaded image and queue it; the job never needs the uploader again."""
    job = ImageJob(
        platform="upload",
        bot_id=source,
        chat_id=source,
        message_id=uuid.uuid4().hex,
        image_key=name or "image",
        sender=source,
        sent_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        routes=routes,
    )
    key = store.save_image(conn, job.job_id, data, settings.blob_ttl)
    job = replace(job, blob=key)
    enqueue_image(conn, job, settings)
    return job
