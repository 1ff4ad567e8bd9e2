"""The worker's Feishu client (real lark-oapi) against the emulator: downloads, tokens, rate limits, errors."""

from __future__ import annotations

import pytest
import redis

from bots.feishu.api import FeishuApi, FeishuPermanentError, FeishuTransientError
from bots.feishu.bots import get_bot
from bots.feishu.resources import fetch_image
from ocr_core.errors import ImageError, PermanentError, TransientError
from ocr_core.job import ImageJob
from ocr_core.sources import fetch
from tests.emulators.feishu import chat_id


@pytest.fixture
def bot(feishu_settings):  # noqa: ANN001, ANN201
    return get_bot(feishu_settings, "default")


def new_api(bot, conn: redis.Redis, **options: object) -> FeishuApi:  # noqa: ANN001
    return FeishuApi(bot, conn, **options)  # type: ignore[arg-type]


def image_job(payload: dict, index: int = 0) -> ImageJob:
    import json

    message = payload["event"]["message"]
    content = json.loads(message["content"])
    key = content["image_key"] if "image_key" in content else [e["image_key"] for p in content["content"] for e in p if e["tag"] == "img"][index]
    return ImageJob("feishu", "default", message["chat_id"], message["message_id"], key, index=index)


def test_fetch_image_through_the_core_registry(feishu_settings, events, conn):
    job = image_job(events.image(chat_id(), b"\x89PNG fake bytes"))
    assert fetch(job, conn) == b"\x89PNG fake bytes"


def test_the_token_is_shared_through_redis(bot, events, conn, feishu, redis_server):
    payload = events.post(chat_id(), [b"one", b"two"])
    # Two clients on two connections, as two worker processes would have.
    first, second = new_api(bot, conn), new_api(bot, redis.Redis.from_url(redis_server.url))
    assert first.download_image(payload["event"]["message"]["message_id"], image_job(payload, 0).image_key) == b"one"
    assert second.download_image(payload["event"]["message"]["message_id"], image_job(payload, 1).image_key) == b"two"
    assert feishu.count("token") == 1
    assert len(conn.keys("ocrhub:feishu:tenant-token:*")) == 1


def test_an_expired_token_is_refreshed_once_and_the_call_retried(bot, events, conn, feishu):
    job = image_job(events.image(chat_id(), b"bytes"))
    api = new_api(bot, conn)
    assert api.download_image(job.message_id, job.image_key) == b"bytes"
    feishu.expire_tokens()
    assert api.download_image(job.message_id, job.image_key) == b"bytes"
    assert feishu.count("invalid_token") == 1
    assert feishu.count("token") == 2


def test_a_token_refused_twice_is_transient_not_a_loop(bot, events, conn, feishu):
    job = image_job(events.image(chat_id(), b"bytes"))
    conn.set(new_api(bot, conn).tokens.key, "t-not-a-real-token")
    feishu.token_ttl = 0  # every token Feishu issues is dead on arrival
    with pytest.raises(FeishuTransientError, match="freshly issued token"):
        new_api(bot, conn).download_image(job.message_id, job.image_key)
    assert feishu.count("invalid_token") == 2


def test_rate_limited_download_waits_for_the_reset_and_retries(bot, events, conn, feishu):
    job = image_job(events.image(chat_id(), b"bytes"))
    waits: list[float] = []
    feishu.throttle("resource", 2)
    assert new_api(bot, conn, sleep=waits.append).download_image(job.message_id, job.image_key) == b"bytes"
    assert waits == [1.0, 1.0]


def test_rate_limit_past_the_allowed_wait_is_transient(bot, events, conn, feishu):
    job = image_job(events.image(chat_id(), b"bytes"))
    feishu.throttle("resource", 10)
    with pytest.raises(FeishuTransientError, match="rate limit"):
        new_api(bot, conn, sleep=lambda s: None, rate_retries=2).download_image(job.message_id, job.image_key)


@pytest.mark.parametrize(
    "code, msg, hint",
    [
        (234003, "File not in msg.", "not part of that message"),
        (234004, "App not in chat.", "add it to the group"),
        (99991672, "Access denied. One of the following scopes is required: [im:message]", "lacks a scope"),
    ],
)
def test_feishu_refusals_are_permanent_with_a_clear_message(bot, events, conn, feishu, code, msg, hint):
    job = image_job(events.image(chat_id(), b"bytes"))
    feishu.fail_resource(job.message_id, job.image_key, code, msg)
    with pytest.raises(FeishuPermanentError) as refused:
        fetch_image(job, conn)
    text = str(refused.value)
    assert str(code) in text and msg in text and hint in text and job.image_key in text
    assert isinstance(refused.value, PermanentError) and not isinstance(refused.value, TransientError)


def test_an_error_answered_with_http_200_is_not_taken_for_image_bytes(bot, events, conn, feishu):
    job = image_job(events.image(chat_id(), b"bytes"))
    feishu.fail_resource(job.message_id, job.image_key, 234004, "App not in chat.", status=200)
    with pytest.raises(FeishuPermanentError, match="HTTP 200, code 234004"):
        new_api(bot, conn).download_image(job.message_id, job.image_key)


def test_an_invalid_token_answered_with_http_200_is_still_refreshed(bot, events, conn, feishu):
    job = image_job(events.image(chat_id(), b"bytes"))
    feishu.fail_resource(job.message_id, job.image_key, 99991663, "Invalid access token for authorization.", status=200)
    with pytest.raises(FeishuTransientError, match="freshly issued token"):
        new_api(bot, conn).download_image(job.message_id, job.image_key)
    assert feishu.count("token") == 2


def test_unknown_image_is_permanent(feishu_settings, conn):
    job = ImageJob("feishu", "default", "oc_x", "om_unknown", "img_unknown")
    with pytest.raises(PermanentError, match="234003"):
        fetch_image(job, conn)


def test_wrong_app_secret_names_the_setting(feishu_settings, set_env, conn):
    set_env(feishu_app_secret="wrong")
    with pytest.raises(PermanentError, match="OCRHUB_FEISHU_APP_SECRET"):
        fetch_image(ImageJob("feishu", "default", "oc_x", "om_x", "img_x"), conn)


def test_feishu_unreachable_is_transient(set_env, settings, app, conn):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    set_env(feishu_app_id=app.app_id, feishu_app_secret=app.app_secret, feishu_encrypt_key="k", feishu_domain=dead)
    with pytest.raises(TransientError, match="did not answer"):
        fetch_image(ImageJob("feishu", "default", "oc_x", "om_x", "img_x"), conn)


def test_oversized_image_is_refused(feishu_settings, set_env, events, conn):
    set_env(max_image_bytes="10")
    job = image_job(events.image(chat_id(), b"x" * 11))
    with pytest.raises(ImageError, match="OCRHUB_MAX_IMAGE_BYTES"):
        fetch_image(job, conn)


def test_unknown_bot_is_a_permanent_config_error(feishu_settings, conn):
    with pytest.raises(PermanentError, match="no Feishu bot 'gone'"):
        fetch_image(ImageJob("feishu", "gone", "oc_x", "om_x", "img_x"), conn)
