"""Where a job's image bytes come from when they are not stored yet: one fetcher per platform.

Fetchers are named by dotted path so that the core never imports a bot package.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import redis

from ocr_core.errors import PermanentError
from ocr_core.job import ImageJob

FETCHERS: dict[str, str] = {
    "feishu": "bots.feishu.resources:fetch_image",
}


class Fetcher(Protocol):
    def __call__(self, job: ImageJob, conn: redis.Redis) -> bytes: ...


def fetch(job: ImageJob, conn: redis.Redis) -> bytes:
    path = FETCHERS.get(job.platform)
    if path is None:
        raise PermanentError(
            f"the image of job {job.job_id} was not stored and platform {job.platform!r} has no fetcher "
            f"(known: {sorted(FETCHERS)}); it may have expired from Redis"
        )
    module_name, _, attr = path.partition(":")
    fetcher: Fetcher = getattr(importlib.import_module(module_name), attr)
    return fetcher(job, conn)
