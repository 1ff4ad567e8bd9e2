"""Failed jobs handed back to their queue with their retries renewed: what `ocrhub requeue` does.

A failed job is named by its id, as `ocrhub requeue` (or GET /api/failed) lists it, or by its
image's job id, as POST /api/images answers it: that names its reading and every failed delivery.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from ocr_core import store
from ocr_core.job import ImageJob
from ocr_core.queue import DELIVER, PROCESS, all_queues, delivery_job_id, ocr_job_id
from ocrhub.settings import Settings


class FailedJob(NamedTuple):
    registry: FailedJobRegistry
    job_id: str


class UnknownQueue(ValueError):
    """A queue name that is none of the hub's queues."""


def failed_jobs(conn: redis.Redis, settings: Settings, queue_names: Iterable[str] = ()) -> list[FailedJob]:
    """Every failed job of the hub's queues, or of the ones named."""
    wanted = set(queue_names)
    queues = all_queues(conn, settings)
    names = [q.name for q in queues]
    unknown = sorted(wanted - set(names))
    if unknown:
        raise UnknownQueue(f"no queue {', '.join(unknown)}: the hub's queues are {', '.join(names)}")
    failed = []
    for queue in queues:
        if not wanted or queue.name in wanted:
            registry = FailedJobRegistry(queue=queue)
            failed += [FailedJob(registry, job_id) for job_id in registry.get_job_ids()]
    return failed


def choose(failed: list[FailedJob], given_ids: Iterable[str], every: bool) -> tuple[list[FailedJob], list[str]]:
    """The failed jobs to requeue (all with `every`, else the ones `given_ids` name, each once) and the ids that name none."""
    chosen = list(failed) if every else []
    missing = []
    for given in given_ids:
        matches = [f for f in failed if f.job_id in (given, ocr_job_id(given)) or f.job_id.startswith(delivery_job_id(given, ""))]
        chosen += [m for m in matches if m not in chosen]
        if not matches:
            missing.append(given)
    return chosen, missing


def hand_back(conn: redis.Redis, settings: Settings, failed: FailedJob) -> bool:
    """Hand one failed job back with its retries renewed; False if it left the failed registry meanwhile."""
    try:
        job = Job.fetch(failed.job_id, connection=conn, serializer=JSONSerializer)
        if job.retries_left is not None and job.retry_intervals:
            job.retries_left = len(job.retry_intervals)
        _hold_image_again(conn, settings, job)  # before it can run and let go of them
        failed.registry.requeue(job)
    except (NoSuchJobError, InvalidJobOperation):
        return False
    return True


def last_errors(conn: redis.Redis, failed: list[FailedJob]) -> list[str]:
    """Why each failed job failed: the last line of its latest traceback, or '' when none is kept."""
    jobs = Job.fetch_many([f.job_id for f in failed], connection=conn, serializer=JSONSerializer)
    reasons = []
    for job in jobs:
        latest = job.latest_result() if job is not None else None
        lines = [line for line in (latest.exc_string or "").strip().splitlines() if line.strip()] if latest else []
        reasons.append(lines[-1] if lines else "")
    return reasons


def _hold_image_again(conn: redis.Redis, settings: Settings, job: Job) -> None:
    """A job that failed for good let go of its image bytes (kept a while for this); the requeued one holds them again."""
    if job.func_name == PROCESS and job.args:
        store.hold_image(conn, ImageJob.from_dict(job.args[0]).job_id, [store.READER], settings.blob_ttl)
    elif job.func_name == DELIVER and len(job.args) == 2:
        store.hold_image(conn, job.args[0], [store.delivery_holder(job.args[1])], settings.blob_ttl)
