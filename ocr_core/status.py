"""Where a queued image stands, read back from RQ and the core's store, for the CLI and the API."""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from ocr_core import store
from ocr_core.job import OcrResult
from ocr_core.queue import ocr_job_id

# What ImageJob.job_id makes (32 hex digits). Anything else names no job, and never reaches RQ,
# which raises on ids outside its own alphabet.
JOB_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class JobState:
    job_id: str
    status: str  # queued, started, scheduled (waiting to retry), finished, failed, unknown
    result: OcrResult | None
    error: str

    @property
    def done(self) -> bool:
        return self.status in {"finished", "failed", "unknown"}


def is_job_id(job_id: str) -> bool:
    return JOB_ID.fullmatch(job_id) is not None


def job_state(conn: redis.Redis, job_id: str) -> JobState:
    if not is_job_id(job_id):
        return JobState(job_id, "unknown", None, "no such job")
    result = store.load_result(conn, job_id)
    try:
        rq_job = Job.fetch(ocr_job_id(job_id), connection=conn, serializer=JSONSerializer)
    except NoSuchJobError:
        status = "finished" if result is not None else "unknown"
        return JobState(job_id, status, result, result.error if result else "no such job")
    status = rq_job.get_status(refresh=True)
    error = ""
    if status == JobStatus.FAILED:
        error = result.error if result is not None and result.error else _last_line(rq_job)
    return JobState(job_id, str(status.value if hasattr(status, "value") else status), result, error)


def _last_line(rq_job: Job) -> str:
    exc = rq_job.latest_result().exc_string if rq_job.latest_result() else ""
    lines = [line for line in (exc or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"
