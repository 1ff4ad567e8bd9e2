"""Counters and latency histograms shared by every process of a hub, kept in Redis.

Any process records (`count`, `observe`); the API renders them for Prometheus. Recording never
raises: a metric is not worth failing a webhook or a job for.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis

log = logging.getLogger(__name__)

PREFIX = "ocrhub:metrics"
COUNTERS = f"{PREFIX}:counters"
HISTOGRAMS = f"{PREFIX}:hist"
# Seconds: from a screenshot on a warm CPU engine to a large scan queued behind others.
BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


def series(name: str, labels: Mapping[str, str] | None = None) -> str:
    """Prometheus text form: name{a="x",b="y"}, labels sorted, values escaped."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def count(conn: redis.Redis, name: str, labels: Mapping[str, str] | None = None, n: int = 1) -> None:
    """Add `n` to a counter, e.g. count(conn, "ocrhub_events_total", {"outcome": "queued"})."""
    try:
        conn.hincrby(COUNTERS, series(name, labels), n)
    except redis.RedisError as exc:
        log.debug("metric %s not recorded: %s", name, exc)


def observe(conn: redis.Redis, name: str, labels: Mapping[str, str] | None, seconds: float) -> None:
    """Add one observation to a histogram, e.g. observe(conn, "ocrhub_ocr_seconds", {"engine": "rapidocr"}, 1.7)."""
    key = f"{HISTOGRAMS}:{series(name, labels)}"
    try:
        with conn.pipeline(transaction=False) as pipe:
            for bound in BUCKETS:
                if seconds <= bound:
                    pipe.hincrby(key, f"le:{bound:g}", 1)
            pipe.hincrby(key, "count", 1)
            pipe.hincrbyfloat(key, "sum", seconds)
            pipe.execute()
    except redis.RedisError as exc:
        log.debug("metric %s not recorded: %s", name, exc)
