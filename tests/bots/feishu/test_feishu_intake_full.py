"""Feishu intake refuses new images (IntakeFull, nothing claimed) while Redis is close to its memory cap,
so that Feishu's re-send is taken once Redis has room again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from bots.feishu.bots import get_bot
from bots.feishu.events import parse_event
from bots.feishu.intake import Intake
from ocr_core.errors import IntakeFull
from ocr_core.queue import INTAKE_CHECK_INTERVAL, intake_queue
from ocrhub.redis_server import EmbeddedRedis
from tests.emulators.feishu import chat_id
from tests.imagegen import encode, text_image

MB = 1024 * 1024


@pytest.fixture
def small_redis(tmp_path) -> Iterator[redis.Redis]:
    with EmbeddedRedis(tmp_path / "small-redis", persist=False, maxmemory=32 * MB) as server:
        client = redis.Redis.from_url(server.url)
        yield client
        client.close()


@pytest.fixture
def full(small_redis: redis.Redis) -> redis.Redis:
    for n in range(20):
        small_redis.set(f"filler:{n}", b"x" * MB)
    return small_redis


def claims(conn: redis.Redis) -> list[bytes]:
    return list(conn.scan_iter("ocrhub:feishu:*"))


def async_twin(conn: redis.Redis) -> redis.asyncio.Redis:
    kwargs = conn.connection_pool.connection_kwargs
    return redis.asyncio.Redis(host=kwargs["host"], port=kwargs["port"])


def test_a_full_redis_refuses_the_batch_and_claims_nothing(events, full, feishu_settings, set_env):
    settings = set_env(intake_memory_fraction="0.5")
    intake = Intake(get_bot(settings, "default"), settings, full)
    event = parse_event(events.image(chat_id(), encode(text_image(["harbor window"], size=48), "PNG")))
    with pytest.raises(IntakeFull):
        intake.take_all([event])
    assert claims(full) == [] and intake_queue(full, settings).count == 0

    for n in range(20):
        full.delete(f"filler:{n}")
    time.sleep(INTAKE_CHECK_INTERVAL + 0.1)
    # The re-send, once Redis has room again, is taken (here by the webhook's asynchronous path).
    [outcome] = asyncio.run(_take(intake, event, async_twin(full)))
    assert outcome.status == "queued"
    assert intake_queue(full, settings).count == 1


def test_the_asynchronous_path_refuses_too(events, full, feishu_settings, set_env):
    settings = set_env(intake_memory_fraction="0.5")
    intake = Intake(get_bot(settings, "default"), settings, full)
    event = parse_event(events.image(chat_id(), encode(text_image(["copper lantern"], size=48), "PNG")))
    with pytest.raises(IntakeFull):
        asyncio.run(_take(intake, event, async_twin(full)))
    assert claims(full) == [] and intake_queue(full, settings).count == 0


def test_messages_without_images_are_still_answered_when_full(events, full, feishu_settings, set_env):
    settings = set_env(intake_memory_fraction="0.5")
    intake = Intake(get_bot(settings, "default"), settings, full)
    text = parse_event(events.text(chat_id(), "hello"))
    assert [o.status for o in intake.take_all([text])] == ["ignored"]


async def _take(intake: Intake, event, aconn: redis.asyncio.Redis):  # noqa: ANN001, ANN202
    try:
        return await intake.atake_all([event], aconn)
    finally:
        await aconn.aclose()
