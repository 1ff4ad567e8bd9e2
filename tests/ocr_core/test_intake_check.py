"""The door check: new work is refused (IntakeFull) while Redis is close to its maxmemory, judged
from the server's own INFO, and asked of Redis at most twice a second per process."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
import redis
from PIL import Image

from ocr_core import queue
from ocr_core.errors import IntakeFull
from ocrhub.redis_server import EmbeddedRedis

MAXMEMORY = 32 * 1024 * 1024
MB = 1024 * 1024


@pytest.fixture
def small_redis(tmp_path) -> Iterator[redis.Redis]:
    """A redis-server of its own with a 32 MB cap and no eviction, as the hub runs its embedded one."""
    with EmbeddedRedis(tmp_path / "small-redis", persist=False, maxmemory=MAXMEMORY) as server:
        client = redis.Redis.from_url(server.url)
        yield client
        client.close()


@pytest.fixture
def half(settings, set_env):
    return set_env(intake_memory_fraction="0.5")


def fill(conn: redis.Redis, megabytes: int) -> None:
    for n in range(megabytes):
        conn.set(f"filler:{n}", b"x" * MB)


def after_the_cached_answer() -> None:
    time.sleep(queue.INTAKE_CHECK_INTERVAL + 0.1)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 32), "white").save(out, "PNG")
    return out.getvalue()


def test_intake_is_refused_once_redis_uses_the_fraction_of_its_cap(small_redis, half):
    queue.check_intake(small_redis, half)
    fill(small_redis, 20)
    after_the_cached_answer()
    with pytest.raises(IntakeFull) as refused:
        queue.check_intake(small_redis, half)
    assert refused.value.limit == MAXMEMORY // 2
    assert refused.value.used >= 20 * MB
    small_redis.flushdb()
    after_the_cached_answer()
    queue.check_intake(small_redis, half)


def test_the_cap_is_whatever_the_server_says(small_redis, half):
    fill(small_redis, 20)
    small_redis.config_set("maxmemory", 0)  # an external Redis without a cap: nothing to protect
    queue.check_intake(small_redis, half)
    small_redis.config_set("maxmemory", 100 * MB)
    after_the_cached_answer()
    queue.check_intake(small_redis, half)  # 20 MB of 100 MB is under half
    small_redis.config_set("maxmemory", 36 * MB)
    after_the_cached_answer()
    with pytest.raises(IntakeFull):
        queue.check_intake(small_redis, half)


def test_an_upload_refused_at_intake_stores_nothing(small_redis, half):
    fill(small_redis, 20)
    keys = small_redis.dbsize()
    after_the_cached_answer()
    with pytest.raises(IntakeFull):
        queue.submit_bytes(small_redis, png(), half, source="test")
    assert small_redis.dbsize() == keys


def test_redis_is_asked_at_most_once_per_interval(small_redis, half):
    small_redis.config_resetstat()
    checks, started = 0, time.monotonic()
    while time.monotonic() - started < 1.2:
        queue.check_intake(small_redis, half)
        checks += 1
    elapsed = time.monotonic() - started
    asked = int(small_redis.info("commandstats").get("cmdstat_info", {}).get("calls", 0))
    assert checks > 100
    assert 1 <= asked <= elapsed / queue.INTAKE_CHECK_INTERVAL + 1


def test_the_async_check_gives_the_same_answer(small_redis, half):
    import asyncio

    import redis.asyncio

    kwargs = small_redis.connection_pool.connection_kwargs

    async def check() -> None:
        aconn = redis.asyncio.Redis(host=kwargs["host"], port=kwargs["port"])
        try:
            await queue.acheck_intake(aconn, half)
        finally:
            await aconn.aclose()

    asyncio.run(check())
    fill(small_redis, 20)
    after_the_cached_answer()
    with pytest.raises(IntakeFull):
        asyncio.run(check())
