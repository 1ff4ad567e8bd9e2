"""The RQ side: queues, retry policy, enqueueing by dotted name with a JSON payload (no pickles),
and the door check that refuses new work while Redis is close to its memory cap."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import redis
import redis.asyncio
from redis.client import Pipeline
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from ocr_core import store
from ocr_core.errors import Deferred, IntakeFull, PermanentError
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


def fails_for_good(rq_job: Job, exc: BaseException) -> bool:
    """Whether RQ will not run `rq_job` again after `exc` (raised by its current attempt) unless an admin requeues it."""
    if isinstance(exc, Deferred):
        return False
    return isinstance(exc, PermanentError) or not rq_job.should_retry


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
    """Store an uploaded image and queue it; the job never needs the uploader again.

    Raises IntakeFull, storing nothing, while Redis is close to its memory cap."""
    check_intake(conn, settings)
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


# Seconds one process trusts its last look at Redis's memory: a webhook answers thousands of
# events a second, and one INFO per half second is enough to stop well before the cap.
INTAKE_CHECK_INTERVAL = 0.5


@dataclass(frozen=True)
class _MemoryLook:
    used: int
    maxmemory: int
    taken: float


_looks: dict[tuple[Any, ...], _MemoryLook] = {}


def check_intake(conn: redis.Redis, settings: Settings) -> None:
    """Raise IntakeFull while Redis uses `intake_memory_fraction` of its maxmemory or more, so that
    new work is refused at the door before Redis refuses a write of work already accepted.
    A Redis without maxmemory is never full. Asks Redis at most every INTAKE_CHECK_INTERVAL seconds."""
    server = _server(conn)
    look = _recent_look(server) or _remember(server, conn.info("memory"))
    _judge(look, settings)


async def acheck_intake(aconn: redis.asyncio.Redis, settings: Settings) -> None:
    """`check_intake` for an event loop: the same answer, from the same per-process memory."""
    server = _server(aconn)
    look = _recent_look(server) or _remember(server, await aconn.info("memory"))
    _judge(look, settings)


def _server(client: redis.Redis | redis.asyncio.Redis) -> tuple[Any, ...]:
    # By address, not by client or database: memory is the server's, and a process's sync and
    # async clients to one Redis share one look.
    kwargs = client.connection_pool.connection_kwargs
    return (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"))


def _recent_look(server: tuple[Any, ...]) -> _MemoryLook | None:
    look = _looks.get(server)
    return look if look is not None and time.monotonic() - look.taken < INTAKE_CHECK_INTERVAL else None


def _remember(server: tuple[Any, ...], info: dict[str, Any]) -> _MemoryLook:
    look = _MemoryLook(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)), time.monotonic())
    _looks[server] = look
    return look


def _judge(look: _MemoryLook, settings: Settings) -> None:
    if look.maxmemory <= 0:
        return
    limit = int(look.maxmemory * settings.intake_memory_fraction)
    if look.used >= limit:
        raise IntakeFull(look.used, limit)
