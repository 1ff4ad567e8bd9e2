"""Test doubles reached the way production reaches real ones: by dotted name through the registries."""

from __future__ import annotations

import os
import time

import redis
from PIL import Image

from ocr_core.errors import TransientError
from ocr_core.job import ImageJob, Line

COUNTER_KEY = "test:engine-calls"
FLAKY_KEY = "test:flaky-calls"


class CountingEngine:
    """Reports the image size as its one line and counts calls in Redis (workers may be other processes)."""

    name = "counting"

    def __init__(self, threads: int = 0) -> None:
        self.conn = redis.Redis.from_url(os.environ["OCRHUB_REDIS_URL"])

    def recognise(self, image: Image.Image) -> list[Line]:
        self.conn.incr(COUNTER_KEY)
        w, h = image.size
        return [Line(text=f"size {w}x{h}", box=((0, 0), (w, 0), (w, h), (0, h)), score=1.0)]


def flaky_fetch(job: ImageJob, conn: redis.Redis) -> bytes:
    """Fails `int(job.image_key.split(':')[0])` times, then returns the bytes stored under test:image."""
    failures = int(job.image_key.split(":")[0])
    calls = conn.incr(f"{FLAKY_KEY}:{job.job_id}")
    if calls <= failures:
        raise TransientError(f"platform briefly unavailable (attempt {calls})")
    return conn.get("test:image") or b""


HOLD_KEY = "test:hold"


class HoldingEngine(CountingEngine):
    """Counts its calls, then waits while test:hold exists: a job a test can catch in flight."""

    name = "holding"

    def recognise(self, image: Image.Image) -> list[Line]:
        lines = super().recognise(image)
        while self.conn.exists(HOLD_KEY):
            time.sleep(0.05)
        return lines


IN_FLIGHT_KEY = "test:in-flight"
PEAK_KEY = "test:peak"
DEFER_KEY = "test:deferrals"


class SlowPageEngine(CountingEngine):
    """A whole-page engine that waits like a remote model and records how many reads overlapped."""

    name = "slow-page"

    def read(self, image: Image.Image, request):  # noqa: ANN001, ANN201
        from ocr_core.engines import PageReading

        now = self.conn.incr(IN_FLIGHT_KEY)
        self.conn.eval("if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end", 1, PEAK_KEY, now)
        time.sleep(0.4)
        self.conn.decr(IN_FLIGHT_KEY)
        return PageReading(self.recognise(image), self.name)


class DeferringEngine(CountingEngine):
    """Says "not now" (`Deferred`, 1 s) the first two times it is asked, then reads."""

    name = "deferring"

    def read(self, image: Image.Image, request):  # noqa: ANN001, ANN201
        from ocr_core.engines import PageReading
        from ocr_core.errors import Deferred

        if self.conn.incr(DEFER_KEY) <= 2:
            raise Deferred("every OCR server is busy", delay=1.0)
        return PageReading(self.recognise(image), self.name)
