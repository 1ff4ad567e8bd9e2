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
    # The way out for a bot on the long connection is named too.
    assert "OCRHUB_FEISHU_MODE=long-connection" in str(refused.value)
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


def sealed(events, plain: bytes, **headers: str) -> tuple[dict[str, str], bytes]:  # noqa: ANN001
    """`plain` encrypted and signed as Feishu would, whatever it holds."""
    body = json.dumps({"encrypt": events.cipher.encrypt(plain)}).encode()
    stamp, nonce = headers.get("timestamp", str(int(time.time()))), "n0nce"
    return {"X-Lark-Request-Timestamp": stamp, "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": signature(stamp, nonce, events.app.encrypt_key, body)}, body


def no_claims_nor_jobs(conn, settings) -> bool:  # noqa: ANN001
    return queued(conn, settings) == [] and conn.keys("ocrhub:feishu:seen:*") == []


@pytest.mark.parametrize("body", [b"[" * 1000 + b"]" * 1000, b'{"encrypt":' * 1000 + b'""' + b"}" * 1000])
def test_a_deeply_nested_body_gets_400(webhook, conn, feishu_settings, body):
    response = httpx.post(f"{webhook}/feishu/events", content=body, timeout=10)
    assert response.status_code == 400 and "nested too deep" in response.json()["msg"]
    assert no_claims_nor_jobs(conn, feishu_settings)


@pytest.mark.parametrize(
    "field, value",
    [("mentions", 5), ("mentions", {"open_id": "ou_1"}), ("message_id", ["om_1"]), ("chat_id", 42), ("message_id", "om_\ud800")],
)
def test_a_genuine_event_with_a_field_of_the_wrong_type_is_acknowledged_and_dropped(webhook, events, conn, feishu_settings, caplog, field, value):
    payload = events.image(chat_id(), b"png")
    payload["event"]["message"][field] = value
    # ensure_ascii keeps a lone surrogate as its \\ud800 escape, as a sender could write it.
    headers, body = sealed(events, json.dumps(payload).encode())
    with caplog.at_level("WARNING", logger="ocrhub.feishu"):
        response = post(f"{webhook}/feishu/events", headers, body)
    # Feishu would re-send anything but a 200, and the same bytes would fail again.
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert no_claims_nor_jobs(conn, feishu_settings)
    [line] = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert field in line


@pytest.mark.parametrize("timestamp", ["nan", "inf", "-inf", "1e999", "-1", "99999999999999999999", "now"])
def test_a_timestamp_that_is_not_whole_seconds_is_refused(webhook, events, conn, feishu_settings, timestamp):
    headers, body = sealed(events, json.dumps(events.image(chat_id(), b"png")).encode(), timestamp=timestamp)
    response = post(f"{webhook}/feishu/events", headers, body)
    assert response.status_code == 401
    assert no_claims_nor_jobs(conn, feishu_settings)


def test_a_full_redis_answers_503_with_retry_after_and_the_resend_is_taken(conn, events, feishu_settings, set_env):
    from ocr_core.queue import INTAKE_CHECK_INTERVAL

    settings = set_env(intake_memory_fraction="0.01")
    api = FastAPI()
    api.include_router(build_router(settings, conn))
    payload = events.image(chat_id(), b"png")
    previous = conn.config_get("maxmemory")["maxmemory"]
    # Intake stops at half of what Redis already holds; Redis itself is far from refusing a write.
    conn.config_set("maxmemory", conn.info("memory")["used_memory"] * 50)
    try:
        # Each process trusts its last look at Redis's memory this long.
        time.sleep(INTAKE_CHECK_INTERVAL)
        with serve(api) as served:
            response = events.deliver(f"{served.url}/feishu/events", payload)
        assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
        assert no_claims_nor_jobs(conn, settings)
    finally:
        conn.config_set("maxmemory", previous)
        time.sleep(INTAKE_CHECK_INTERVAL)
    with serve(api) as served:
        assert events.deliver(f"{served.url}/feishu/events", payload).json()["status"] == "queued"
    assert len(queued(conn, settings)) == 1


def test_long_connection_mode_needs_no_key_or_token_and_serves_no_webhook(conn, feishu, events, feishu_settings, set_env):
    from bots.feishu.bots import get_bot
    from bots.feishu.longconn import Listener

    other = feishu.add_app()
    bots = {"sales": {"app_id": other.app_id, "app_secret": other.app_secret, "mode": "long-connection"}}
    settings = set_env(feishu_encrypt_key="", feishu_verification_token="", feishu_mode="long-connection", feishu_bots=json.dumps(bots))
    api = FastAPI()
    api.include_router(build_router(settings, conn))
    with serve(api) as served:
        for path in ("/feishu/events", "/feishu/sales/events"):
            response = httpx.post(f"{served.url}{path}", content=json.dumps(events.image(chat_id(), b"png")), timeout=10)
            assert response.status_code == 404 and "long connection" in response.json()["msg"]
        assert "OCRHUB_FEISHU_MODE=webhook" in response.json()["msg"] or '"mode": "webhook"' in response.json()["msg"]
    assert queued(conn, settings) == []
    # The long connection itself takes the bot's events with neither secret.
    assert Listener(get_bot(settings, "default"), settings, conn).hear(json.dumps(events.image(chat_id(), b"png")).encode()).status == "queued"
    # A further bot in webhook mode is still held to a key or token, and told how to say otherwise.
    bots["sales"]["mode"] = "webhook"
    with pytest.raises(BotConfigError, match=r'"mode": "long-connection" in OCRHUB_FEISHU_BOTS\[\'sales\'\]'):
        build_router(set_env(feishu_bots=json.dumps(bots)), conn)


def test_the_long_connection_drops_what_it_cannot_read(conn, events, feishu_settings):
    from bots.feishu.bots import get_bot
    from bots.feishu.longconn import Listener

    listener = Listener(get_bot(feishu_settings, "default"), feishu_settings, conn)
    payload = events.image(chat_id(), b"png")
    payload["event"]["message"]["mentions"] = 5
    for raw in (b"[" * 1000 + b"]" * 1000, json.dumps(payload).encode(), b"\xff"):
        assert listener.hear(raw).status == "ignored"
    assert no_claims_nor_jobs(conn, feishu_settings)


def test_outcomes_are_counted_by_bot_outcome_and_reason(webhook, events, conn, feishu_settings):
    from bots.feishu.webhook import EVENTS_METRIC
    from ocrhub.metrics import COUNTERS, series

    url = f"{webhook}/feishu/events"
    image = events.image(chat_id(), b"png")
    events.deliver(url, image)
    events.deliver(url, image)
    events.deliver(url, events.text(chat_id(), "hello"))
    events.deliver(url, events.image(chat_id(), b"png", sender_type="app"))
    events.deliver(url, events.post(chat_id(), ["only words"]))
    events.deliver(url, events.other())
    events.deliver(url, events.url_verification())
    malformed = events.image(chat_id(), b"png")
    malformed["event"]["message"]["mentions"] = 5
    events.deliver(url, malformed)
    headers, body = events.seal(events.image(chat_id(), b"png"))
    post(url, {**headers, "X-Lark-Signature": "0" * 64}, body)
    events.deliver(url, events.image(chat_id(), b"png"), timestamp=str(int(time.time()) - 3600))
    httpx.post(f"{webhook}/feishu/nobody/events", content=b"{}", timeout=10)
    httpx.post(url, content=b"[" * 1000, timeout=10)

    def labels(outcome: str, reason: str = "", bot: str = "default") -> str:
        return series(EVENTS_METRIC, {"platform": "feishu", "bot": bot, "outcome": outcome, "reason": reason})

    expected = {
        labels("queued"): 1,
        labels("duplicate"): 1,
        labels("ignored", "not_image"): 1,
        labels("ignored", "from_bot"): 1,
        labels("ignored", "no_image"): 1,
        labels("ignored", "not_message"): 1,
        labels("ignored", "challenge"): 1,
        labels("ignored", "malformed"): 1,
        labels("refused", "bad_signature"): 1,
        labels("refused", "replay"): 1,
        labels("refused", "unknown_bot", bot=""): 1,
        labels("refused", "not_json"): 1,
    }
    deadline = time.monotonic() + 5
    while True:
        counted = {k.decode(): int(v) for k, v in conn.hgetall(COUNTERS).items() if k.startswith(EVENTS_METRIC.encode())}
        if counted == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert counted == expected
    # Labels come from a few fixed words: never a chat, message or bot id taken from a request.
    assert image["event"]["message"]["chat_id"] not in str(counted) and "nobody" not in str(counted)


def test_an_unexpected_failure_is_one_log_line_and_a_4xx_or_503_never_a_500(events, conn, feishu_settings, caplog):
    import asyncio

    from bots.feishu.bots import get_bot
    from bots.feishu.webhook import Receiver, async_twin

    class Broken:
        def open(self, headers, body):  # noqa: ANN001, ANN202
            raise RuntimeError("a bug while reading")

    async def failing_run(batch):  # noqa: ANN001, ANN202
        raise KeyError("a bug while queueing")

    async def receive_both() -> tuple[int, int]:
        aconn = async_twin(conn)
        try:
            reading = Receiver(get_bot(feishu_settings, "default"), feishu_settings, conn, aconn)
            reading.gate = Broken()  # type: ignore[assignment]
            queueing = Receiver(get_bot(feishu_settings, "default"), feishu_settings, conn, aconn)
            queueing.batcher.run = failing_run
            headers, body = events.seal(events.image(chat_id(), b"png"))
            lowered = {k.lower(): v for k, v in headers.items()}
            return (await reading.receive(lowered, body)).status, (await queueing.receive(lowered, body)).status
        finally:
            await aconn.aclose()

    with caplog.at_level("ERROR", logger="ocrhub.feishu"):
        assert asyncio.run(receive_both()) == (400, 503)
    assert [r.getMessage().count("\n") for r in caplog.records] == [0, 0]
    assert "a bug while reading" in caplog.records[0].getMessage() and "a bug while queueing" in caplog.records[1].getMessage()


def test_a_new_message_under_an_event_id_seen_before_is_read_exactly_once(webhook, events, conn, feishu_settings):
    # Found by the fuzzer: refused as a re-send on its event_id alone, the message held no claim,
    # so the worker read it anyway, and again when it came back under a fresh event_id.
    url = f"{webhook}/feishu/events"
    first, second = events.image(chat_id(), b"png"), events.image(chat_id(), b"png")
    second["header"]["event_id"] = first["header"]["event_id"]
    assert events.deliver(url, first).json()["status"] == "queued"
    assert events.deliver(url, second).json()["status"] == "queued"
    second["header"]["event_id"] = "a-fresh-event-id"
    assert events.deliver(url, second).json()["status"] == "duplicate"
    messages = [job.message_id for job in queued(conn, feishu_settings)]
    assert sorted(messages) == sorted(p["event"]["message"]["message_id"] for p in (first, second))
