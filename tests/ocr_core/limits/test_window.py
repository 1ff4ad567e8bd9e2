"""The sliding-window limit (Feishu: 5 messages per second per chat), shared through a real Redis."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from ocr_core.limits import LimitExceeded
from ocr_core.limits.window import SlidingWindow
from ocrhub.redis_server import EmbeddedRedis

PREFIX = "ocrhub:test:rate"


def take(url: str, key: str, count: int, stamps: list[float]) -> None:
    """One worker: its own connection and its own limiter; only Redis is shared."""
    window = SlidingWindow(redis.Redis.from_url(url), PREFIX, limit=5, window=0.5)
    for _ in range(count):
        window.acquire(key)
        stamps.append(time.monotonic())


def test_workers_share_one_window_per_key(redis_server: EmbeddedRedis, conn: redis.Redis) -> None:
    stamps: list[float] = []
    workers = [threading.Thread(target=take, args=(redis_server.url, "chat", 4, stamps)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(stamps) == 12
    stamps.sort()
    assert all(b - a >= 0.45 for a, b in zip(stamps, stamps[5:])), "more than 5 within the window"
    assert [key.decode() for key in conn.keys("*")] == [f"{PREFIX}:chat"]


def test_other_keys_have_their_own_window(redis_server: EmbeddedRedis, conn: redis.Redis) -> None:
    take(redis_server.url, "busy", 5, [])
    started = time.monotonic()
    take(redis_server.url, "idle", 5, [])
    assert time.monotonic() - started < 0.2


def test_a_wait_beyond_the_timeout_is_refused_at_once(conn: redis.Redis) -> None:
    window = SlidingWindow(conn, PREFIX, limit=1, window=60)
    window.acquire("chat")
    started = time.monotonic()
    with pytest.raises(LimitExceeded, match="more than 1 per 60 s queued for chat") as refused:
        window.acquire("chat", timeout=1.0)
    assert refused.value.wait > 59 and time.monotonic() - started < 0.5
