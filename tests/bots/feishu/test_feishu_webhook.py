"""The webhook under a real uvicorn on a real Redis: what gets queued, what is refused, what is ignored."""

from __future__ import annotations

import json
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi import FastAPI
from bots.feishu.bots import BotConfigError
from bots.feishu.crypto import signature
from bots.feishu.webhook import build_router
from ocr_core.queue import intake_queue
from tests.bots.feishu.fixtures import images_queued, serve
from tests.emulators.feishu import chat_id


queued = images_queued


def post(url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_image_message_queues_one_job(webhook, events, conn, feishu_settings):
    chat = chat_id()
    payload = events.image(chat, b"png")
    response = events.deliver(f"{webhook}/feishu/events", payload)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "queued"
    [job] = queued(conn, feishu_settings)
    message = payload["event"]["message"]
    assert (job.platform, job.bot_id, job.chat_id, job.message_id) == ("feishu", "default", chat, message["message_id"])
    assert job.image_key == json.loads(message["content"])["image_key"]
    assert job.sender == "ou_sender" and job.chat_type == "group" and job.sent_at and job.routes == ()


def test_post_with_two_images_queues_both_in_order_with_its_text(webhook, events, conn, feishu_settings):
    payload = events.post(chat_id(), ["look:", b"one", b"two"], title="Scans")
    assert events.deliver(f"{webhook}/feishu/events", payload).json()["status"] == "queued"
    jobs = queued(conn, feishu_settings)
    message = events.emulator.messages[payload["event"]["message"]["message_id"]]
    assert [message.images[j.image_key] for j in jobs] == [b"one", b"two"]
    assert [j.index for j in jobs] == [0, 1]
    assert all(j.context == "Scans\nlook:" for j in jobs)


def test_the_same_event_three_times_and_a_late_resend_queue_once(webhook, events, conn, feishu_settings):
    payload = events.image(chat_id(), b"png")
    url = f"{webhook}/feishu/events"
    statuses = [events.deliver(url, payload).json()["status"] for _ in range(3)]
    assert statuses == ["queued", "duplicate", "duplicate"]
    # Feishu's later re-send may carry a fresh event_id: the message_id still matches.
    resent = json.loads(json.dumps(payload))
    resent["header"]["event_id"] = "a-new-event-id"
    assert events.deliver(url, resent).json()["status"] == "duplicate"
    assert len(queued(conn, feishu_settings)) == 1


def test_concurrent_resends_queue_once(webhook, events, conn, feishu_settings):
    payload = events.post(chat_id(), [b"a", b"b"])
    url = f"{webhook}/feishu/events"
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: events.deliver(url, payload).json()["status"], range(16)))
    assert statuses.count("queued") == 1 and statuses.count("duplicate") == 15
    assert len(queued(conn, feishu_settings)) == 2


def test_dedupe_is_kept_at_least_eight_hours(webhook, events, conn, feishu_settings):
    payload = events.image(chat_id(), b"png")
    events.deliver(f"{webhook}/feishu/events", payload)
    keys = conn.keys("ocrhub:feishu:seen:*")
    assert len(keys) == 2
    assert all(conn.ttl(k) >= 8 * 3600 for k in keys)


@pytest.mark.parametrize("attack", ["forged", "stale", "broken-encryption", "malformed-json", "wrong-token", "unsigned"])
def test_refused_requests_get_4xx_and_queue_nothing(webhook, events, conn, feishu_settings, attack):
    payload = events.image(chat_id(), b"png")
    if attack == "wrong-token":
        payload["header"]["token"] = "guessed"
    headers, body = events.seal(payload, timestamp=str(int(time.time()) - 3600) if attack == "stale" else None)
    if attack == "forged":
        headers["X-Lark-Signature"] = "f" * 64
    elif attack == "unsigned":
        headers = {"Content-Type": "application/json"}
    elif attack in ("broken-encryption", "malformed-json"):
        body = json.dumps({"encrypt": "AAAA" * 12}).encode() if attack == "broken-encryption" else b'{"schema": "2.0", '
        # Correctly signed: only the content is wrong.
        stamp, nonce = headers["X-Lark-Request-Timestamp"], headers["X-Lark-Request-Nonce"]
        headers["X-Lark-Signature"] = signature(stamp, nonce, events.app.encrypt_key, body)
    response = post(f"{webhook}/feishu/events", headers, body)
    assert 400 <= response.status_code < 500, response.text
    assert queued(conn, feishu_settings) == []
    assert conn.keys("ocrhub:feishu:seen:*") == []
    # The genuine event still goes through afterwards: a refusal claims nothing.
    assert events.deliver(f"{webhook}/feishu/events", events.image(chat_id(), b"png")).status_code == 200


def test_url_verification_answers_the_challenge(webhook, events):
    response = events.deliver(f"{webhook}/feishu/events", events.url_verification("c-123"))
    assert response.status_code == 200 and response.json() == {"challenge": "c-123"}


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda e: e.other("im.chat.member.bot.added_v1"), None),
        (lambda e: e.text(chat_id(), "hello"), "text message"),
        (lambda e: e.image(chat_id(), b"png", sender_type="app"), "sent by a app"),
    ],
)
def test_unknown_events_and_unreadable_messages_get_200_and_are_ignored(webhook, events, conn, feishu_settings, make, reason):
    response = events.deliver(f"{webhook}/feishu/events", make(events))
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert queued(conn, feishu_settings) == []


def test_schema_1_events_are_queued(webhook, events, conn, feishu_settings):
    url = f"{webhook}/feishu/events"
    assert events.deliver(url, events.v1_image(chat_id(), b"png")).json()["status"] == "queued"
    assert events.deliver(url, events.v1_post(chat_id(), "two", [b"1", b"2"])).json()["status"] == "queued"
    assert len(queued(conn, feishu_settings)) == 3


def test_direct_chats_are_read(webhook, events, conn, feishu_settings):
    response = events.deliver(f"{webhook}/feishu/events", events.image(chat_id(), b"png", chat_type="p2p"))
    assert response.json()["status"] == "queued"
    assert queued(conn, feishu_settings)[0].chat_type == "p2p"


def test_mention_policy_reads_only_messages_that_at_the_bot(conn, events, feishu_settings, set_env):
    settings = set_env(feishu_group_policy="mention", feishu_bot_open_id="ou_the_bot")
    api = FastAPI()
    api.include_router(build_router(settings, conn))
    with serve(api) as served:
        url = f"{served.url}/feishu/events"
        assert events.deliver(url, events.image(chat_id(), b"png")).json()["status"] == "ignored"
        assert events.deliver(url, events.image(chat_id(), b"png", mentions=("ou_someone",))).json()["status"] == "ignored"
        assert events.deliver(url, events.image(chat_id(), b"png", mentions=("ou_the_bot",))).json()["status"] == "queued"
        assert events.deliver(url, events.image(chat_id(), b"png", chat_type="p2p")).json()["status"] == "queued"
        assert events.deliver(url, events.v1_image(chat_id(), b"png", is_mention=True)).json()["status"] == "queued"
    assert len(queued(conn, settings)) == 3


def test_mention_policy_needs_the_bot_open_id(conn, feishu_settings, set_env):
    settings = set_env(feishu_group_policy="mention")
    with pytest.raises(BotConfigError, match="OCRHUB_FEISHU_BOT_OPEN_ID"):
        build_router(settings, conn)


def test_several_bots_each_at_their_own_url(conn, feishu, events, feishu_settings, set_env):
    other = feishu.add_app(encrypt_key="other-key")
    settings = set_env(feishu_bots=json.dumps({"sales": {"app_id": other.app_id, "app_secret": other.app_secret, "encrypt_key": other.encrypt_key}}))
    other_events = feishu.events(other)
    api = FastAPI()
    api.include_router(build_router(settings, conn))
    with serve(api) as served:
        assert other_events.deliver(f"{served.url}/feishu/sales/events", other_events.image(chat_id(), b"png")).status_code == 200
        # Sealed with the other bot's key: refused at the default bot's URL, and the reverse.
        assert other_events.deliver(f"{served.url}/feishu/events", other_events.image(chat_id(), b"png")).status_code == 401
        assert events.deliver(f"{served.url}/feishu/sales/events", events.image(chat_id(), b"png")).status_code == 401
        assert events.deliver(f"{served.url}/feishu/events", events.image(chat_id(), b"png")).status_code == 200
        assert httpx.post(f"{served.url}/feishu/nobody/events", content=b"{}").status_code == 404
    assert sorted(j.bot_id for j in queued(conn, settings)) == ["default", "sales"]


def test_a_bot_that_verifies_nothing_is_refused_unless_allowed(conn, feishu_settings, set_env):
    settings = set_env(feishu_encrypt_key="", feishu_verification_token="")
    with pytest.raises(BotConfigError, match="neither an Encrypt Key nor a Verification Token") as refused:
        build_router(settings, conn)
    assert feishu_settings.feishu_app_secret.get_secret_value() not in str(refused.value)
    allowed = set_env(feishu_allow_unverified="true")
    assert build_router(allowed, conn).routes


def test_no_feishu_configured_gives_404_not_a_crash(conn, settings):
    api = FastAPI()
    api.include_router(build_router(settings, conn))
    with serve(api) as served:
        response = httpx.post(f"{served.url}/feishu/events", content=b"{}")
    assert response.status_code == 404 and "OCRHUB_FEISHU_APP_ID" in response.json()["msg"]


def test_oversized_bodies_are_refused(webhook):
    response = httpx.post(f"{webhook}/feishu/events", content=b" " * (1 << 20 + 1), timeout=10)
    assert response.status_code == 413


def test_secrets_never_in_repr(feishu_settings):
    from bots.feishu.bots import load_bots

    shown = repr(load_bots(feishu_settings)) + repr(feishu_settings)
    for secret in ("feishu_app_secret", "feishu_encrypt_key", "feishu_verification_token"):
        assert getattr(feishu_settings, secret).get_secret_value() not in shown


def test_queued_batch_names_its_function_and_carries_json(webhook, events, conn, feishu_settings):
    events.deliver(f"{webhook}/feishu/events", events.image(chat_id(), b"png"))
    [rq_job] = intake_queue(conn, feishu_settings).get_jobs()
    func, _instance, args, _kwargs = json.loads(zlib.decompress(conn.hget(rq_job.key, "data")))
    assert func == "bots.feishu.intake.expand"
    token, [message] = args
    assert message["jobs"][0]["platform"] == "feishu" and conn.get(message["claim"]) == token.encode()
