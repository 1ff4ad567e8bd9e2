"""The per-scope request budget (Notion: per token), shared through a real Redis by budgets that know nothing of each other."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from ocr_core.limits import LimitExceeded
from ocr_core.limits.budget import RedisBudget
from ocrhub.redis_server import EmbeddedRedis

PREFIX = "ocrhub:test:budget"
TOKEN = "ntn_budget_secret"


def spend(url: str, token: str, rate: float, count: int, stamps: list[float]) -> None:
    """One worker: its own connection and its own budget object; only Redis is shared."""
    budget = RedisBudget(redis.Redis.from_url(url), PREFIX, token, rate)
    for _ in range(count):
        budget.acquire()
        stamps.append(time.monotonic())


def test_workers_share_one_budget_per_token(redis_server: EmbeddedRedis, conn: redis.Redis) -> None:
    stamps: list[float] = []
    started = time.monotonic()
    workers = [threading.Thread(target=spend, args=(redis_server.url, TOKEN, 20, 10, stamps)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    # 30 requests at 20/s: the last may go no earlier than 29 intervals after the first.
    assert len(stamps) == 30
    assert time.monotonic() - started >= 29 / 20 - 0.05
    stamps.sort()
    for a, b in zip(stamps, stamps[10:]):
        assert b - a >= 10 / 20 - 0.05, "more than 10 requests within half a second"
    assert all(TOKEN not in key.decode() for key in conn.keys("*"))


def test_other_tokens_have_their_own_budget(redis_server: EmbeddedRedis, conn: redis.Redis) -> None:
    spend(redis_server.url, "ntn_busy", 2, 2, [])
    started = time.monotonic()
    spend(redis_server.url, "ntn_idle", 2, 1, [])
    assert time.monotonic() - started < 0.2


def test_retry_after_pauses_every_worker(redis_server: EmbeddedRedis, conn: redis.Redis) -> None:
    RedisBudget(redis.Redis.from_url(redis_server.url), PREFIX, TOKEN, 50).pause(1.0)
    started = time.monotonic()
    RedisBudget(redis.Redis.from_url(redis_server.url), PREFIX, TOKEN, 50).acquire()
    assert 0.9 <= time.monotonic() - started < 1.5


def test_a_wait_beyond_the_limit_is_a_retry_later(conn: redis.Redis) -> None:
    budget = RedisBudget(conn, PREFIX, TOKEN, 50, max_wait=1.0)
    budget.pause(30)
    started = time.monotonic()
    with pytest.raises(LimitExceeded, match="booked 30 s ahead"):
        budget.acquire()
    assert time.monotonic() - started < 0.5
