"""Property-based fuzzing of the Feishu webhook: the real ASGI app on a real Redis, 1,000 cases per entry point.

Three entry points: genuine (signed and encrypted, or carrying the token) events with any field of
any event shape Feishu sends mutated; unsigned and garbage bodies; garbage headers around a genuine
event. Whatever comes in: never a 5xx (a 503 only for a Redis outage, not simulated here), nothing
queued for an event the hub must not read, and a genuine event afterwards is queued exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from bots.feishu.crypto import Cipher, signature
from bots.feishu.events import IMAGE_TYPES, MAX_ID, MESSAGE_RECEIVED, TEXT_TAGS, URL_VERIFICATION
from bots.feishu.intake import batch_images
from bots.feishu.webhook import EVENTS_METRIC, MAX_BODY, build_router
from ocr_core.job import ImageJob
from ocr_core.queue import intake_queue
from ocrhub.metrics import COUNTERS
from ocrhub.settings import Settings
from tests.emulators.feishu import App, Events, FeishuEmulator, chat_id

# About a minute and a half for the three on a free core; FEISHU_FUZZ_CASES=50 for a quick look.
pytestmark = pytest.mark.slow
CASES = int(os.environ.get("FEISHU_FUZZ_CASES", "1000"))
# Refused requests never reach the queue: after those, the genuine event is tried now and then.
CHECK_EVERY = 10
FUZZ = hypothesis_settings(
    max_examples=CASES,
    deadline=None,
    database=None,
    # One app and one Redis serve every case of a test, on purpose: state must not leak between cases.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
DEFAULT_PATH, PLAIN_PATH = "/feishu/events", "/feishu/plain/events"
METRIC_REASONS = {
    "", "bad_signature", "replay", "unsigned", "bad_token", "not_json", "undecryptable", "no_key", "too_large",
    "unknown_bot", "no_webhook", "bad_request", "intake_full", "redis_down", "error", "malformed", "challenge", "not_message",
    "from_bot", "other_app", "not_image", "not_mentioned", "no_image", "other",
}


# -- building bodies: JSON with raw splices (nesting and numbers Python's json would refuse to write) --


@dataclass(frozen=True)
class Raw:
    """JSON text put into the body as is."""

    text: str


@dataclass
class Packed:
    """A JSON document inside a string, like message.content: mutations reach inside it."""

    value: Any


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Packed):
        return json.dumps(dump(value.value))
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


def pack(payload: dict) -> dict:
    message = payload.get("event", {}).get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        message["content"] = Packed(json.loads(message["content"]))
    return payload


def paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(node, Packed):
        node = node.value
    if isinstance(node, dict):
        for key, child in node.items():
            yield from paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from paths(child, (*path, index))


def container(root: Any, path: tuple) -> Any:
    node = root
    for step in path:
        node = node[step]
        if isinstance(node, Packed):
            node = node.value
    return node


# -- what gets mutated, and into what --

MEANINGFUL = [
    "", "2.0", "1.0", URL_VERIFICATION, MESSAGE_RECEIVED, "message", "event_callback", "image", "post", "text", "file",
    "p2p", "group", "private", "user", "app", "img", "at", "a", "md", "code_block", "zh_cn", "content", "title",
    "image_key", "open_id", "0", "-1", "1700000000000", "nan",
]
# Lone surrogates included: JSON can carry them as \ud800 escapes.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=24)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63), st.floats(), ANY_TEXT, st.sampled_from(MEANINGFUL)
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.one_of(ANY_TEXT, st.sampled_from(MEANINGFUL)), inner, max_size=4), max_leaves=10
)
HUGE = st.one_of(
    st.integers(MAX_ID, 300_000).map(lambda n: "x" * n),
    st.integers(min_value=10**300, max_value=10**4000),
    st.integers(4301, 20_000).map(lambda n: Raw("9" * n)),  # more digits than Python turns into an int
    st.just(Raw("1e999")),
)
NESTED = st.integers(50, 5000).flatmap(lambda depth: st.sampled_from([Raw("[" * depth + "]" * depth), Raw('{"a":' * depth + "0" + "}" * depth)]))
VALUES = st.one_of(JSON_VALUES, HUGE, NESTED)


@st.composite
def mutated(draw: st.DrawFn, payload: dict) -> tuple[dict, list[str]]:
    """`payload` with one to three fields replaced, removed, added to or pushed onto."""
    tree = pack(payload)
    done = []
    for _ in range(draw(st.integers(1, 3))):
        targets = [p for p in paths(tree) if p]
        if not targets:
            break
        path = draw(st.sampled_from(targets))
        parent, last = container(tree, path[:-1]), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "replace", "remove", "add", "wrap"]))
        if action == "remove":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(st.sampled_from(MEANINGFUL + ["schema", "uuid", "type", "event", "header", "token"]), ANY_TEXT))] = draw(VALUES)
        elif action == "wrap":
            parent[last] = draw(st.sampled_from([lambda v: [v], lambda v: {"value": v}, lambda v: Packed(v)]))(parent[last])
        else:
            parent[last] = draw(VALUES)
        done.append(f"{action} {path}")
    return tree, done


# -- the reference: what the hub must never read --


def _surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def bad_text(value: Any, *, required: bool = False, limit: int = 0) -> bool:
    if value is None or value == "":
        return required
    if not isinstance(value, str) or _surrogate(value):
        return True
    return bool(limit) and len(value) > limit


def bad_field(data: dict, key: str, *, required: bool = False, short: bool = False) -> bool:
    return bad_text(data.get(key), required=required, limit=MAX_ID if short else 0)


def bad_time(value: Any) -> bool:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return False
    return bad_text(value, limit=64)


def bad_post(content: dict) -> bool:
    if "content" not in content:
        content = next((v for v in content.values() if isinstance(v, dict) and "content" in v), content)
    paragraphs = content.get("content")
    if paragraphs is None:
        paragraphs = []
    if not isinstance(paragraphs, list) or bad_field(content, "title"):
        return True
    for paragraph in paragraphs:
        if not isinstance(paragraph, list):
            return True
        for element in paragraph:
            if not isinstance(element, dict) or bad_field(element, "tag", short=True):
                return True
            tag = element.get("tag")
            if tag == "img" and bad_field(element, "image_key", required=True, short=True):
                return True
            if tag in TEXT_TAGS and bad_field(element, TEXT_TAGS[tag]):
                return True
    return False


def bad_content(message_type: str, raw: Any) -> bool:
    if message_type not in IMAGE_TYPES:
        return False
    if not isinstance(raw, str):
        return True
    try:
        content = json.loads(raw)
    except ValueError:
        return True
    except RecursionError:
        # Where Python's nesting limit bites depends on the stack beneath: this says nothing.
        return False
    if not isinstance(content, dict):
        return True
    return bad_field(content, "image_key", required=True, short=True) if message_type == "image" else bad_post(content)


def bad_schema2(p: dict) -> bool:
    header = p.get("header")
    if bad_field(p, "schema", required=True, short=True) or not isinstance(header, dict):
        return True
    if any(bad_field(header, k, required=k == "event_type", short=k != "token") for k in ("event_type", "event_id", "app_id", "token")):
        return True
    if header["event_type"] != MESSAGE_RECEIVED:
        return False
    event = p.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("message"), dict) or not isinstance(event.get("sender"), dict):
        return True
    message, sender = event["message"], event["sender"]
    ids = sender.get("sender_id")
    if ids is not None and not isinstance(ids, dict):
        return True
    ids = ids or {}
    mentions = message.get("mentions")
    if mentions is not None and not isinstance(mentions, list):
        return True
    for mention in mentions or []:
        if not isinstance(mention, dict) or (mention.get("id") is not None and not isinstance(mention["id"], dict)):
            return True
        if bad_field(mention.get("id") or {}, "open_id", short=True):
            return True
    return (
        bad_field(ids, "open_id", short=True) or bad_field(ids, "user_id", short=True)
        or bad_field(sender, "sender_type", short=True)
        or any(bad_field(message, k, required=k != "chat_type", short=True) for k in ("message_id", "chat_id", "message_type", "chat_type"))
        or bad_time(message.get("create_time"))
        or bad_content(message["message_type"], message.get("content"))
    )


def bad_schema1(p: dict) -> bool:
    event = p["event"]
    if bad_field(event, "type", required=True, short=True) or bad_field(p, "uuid", short=True) or bad_field(p, "token") or bad_field(event, "app_id", short=True):
        return True
    if event["type"] != "message":
        return False
    if bad_field(event, "msg_type", required=True, short=True):
        return True
    kind = event["msg_type"]
    if kind == "image" and bad_field(event, "image_key", required=True, short=True):
        return True
    if kind == "post":
        keys = event.get("image_keys")
        if keys is not None and (not isinstance(keys, list) or any(bad_text(k, required=True, limit=MAX_ID) for k in keys)):
            return True
        if bad_field(event, "title") or bad_field(event, "text"):
            return True
    elif kind != "image" and bad_field(event, "text"):
        return True
    return (
        bad_field(event, "chat_type", short=True) or bad_field(event, "open_id", short=True)
        or bad_field(event, "open_message_id", required=True, short=True) or bad_field(event, "open_chat_id", required=True, short=True)
        or (event.get("is_mention") is not None and not isinstance(event["is_mention"], bool))
        or bad_time(p.get("ts"))
    )


def never_readable(plaintext: bytes) -> bool:
    """True when the event breaks a rule the parser must enforce; False says nothing either way."""
    try:
        p = json.loads(plaintext)
    except ValueError:
        return True
    except RecursionError:
        return False
    if not isinstance(p, dict):
        return True
    if p.get("type") == URL_VERIFICATION:
        return bad_field(p, "challenge", required=True) or bad_field(p, "token")
    if "schema" in p:
        return bad_schema2(p)
    if "uuid" in p and isinstance(p.get("event"), dict):
        return bad_schema1(p)
    return True


# -- the app under test, and what it queued --


@dataclass
class Hub:
    loop: asyncio.Runner
    client: httpx.AsyncClient
    conn: redis.Redis
    settings: Settings
    default: Events
    plain: Events
    requests: int = 0
    cases: int = 0

    def post(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]] | dict[str, str] | None = None) -> Any:
        self.requests += 1
        # A webhook stuck on an earlier case fails here rather than hanging the run.
        return self.loop.run(asyncio.wait_for(self.client.post(path, content=body, headers=headers), 30))

    def state(self) -> tuple[int, int]:
        """Jobs in the intake queue, and keys in Redis: a request that queues nothing writes nothing at all."""
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.llen(intake_queue(self.conn, self.settings).key)
            pipe.dbsize()
            jobs, keys = pipe.execute()
        return jobs, keys

    def images_since(self, before: tuple[int, int]) -> list[ImageJob]:
        rq_jobs = intake_queue(self.conn, self.settings).get_jobs(offset=before[0])
        return [image for rq_job in rq_jobs for image in batch_images(self.conn, *rq_job.args)]

    def seal(self, events: Events, plaintext: bytes) -> tuple[str, bytes, dict[str, str]]:
        """How Feishu would send `plaintext` to this bot: encrypted and signed, or as it is with the token inside."""
        if events is self.plain:
            return PLAIN_PATH, plaintext, {"Content-Type": "application/json"}
        body = json.dumps({"encrypt": Cipher(events.app.encrypt_key).encrypt(plaintext)}).encode()
        stamp, nonce = str(int(time.time())), "fuzz-nonce"
        return DEFAULT_PATH, body, {
            "X-Lark-Request-Timestamp": stamp,
            "X-Lark-Request-Nonce": nonce,
            "X-Lark-Signature": signature(stamp, nonce, events.app.encrypt_key, body),
        }

    def now_and_then_check_a_genuine_event(self, plain: bool = False) -> None:
        self.cases += 1
        if self.cases % CHECK_EVERY == 0:
            self.check_a_genuine_event_is_queued_once(plain)

    def check_a_genuine_event_is_queued_once(self, plain: bool = False) -> None:
        events = self.plain if plain else self.default
        before = self.state()
        payload = events.image(chat_id(), b"png")
        path, body, headers = self.seal(events, json.dumps(payload).encode())
        statuses = [self.post(path, body, headers).json().get("status") for _ in range(2)]
        assert statuses == ["queued", "duplicate"], statuses
        [image] = self.images_since(before)
        assert image.message_id == payload["event"]["message"]["message_id"]

    def check_metrics(self) -> None:
        """After shutdown: one count per request, labelled from a few fixed words only."""
        counted = {k.decode(): int(v) for k, v in self.conn.hgetall(COUNTERS).items() if k.startswith(EVENTS_METRIC.encode())}
        assert sum(counted.values()) == self.requests
        for series in counted:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
            assert labels["platform"] == "feishu" and labels["bot"] in ("default", "plain", ""), series
            assert labels["outcome"] in ("queued", "duplicate", "ignored", "refused") and labels["reason"] in METRIC_REASONS, series


@pytest.fixture
def hub(feishu: FeishuEmulator, app: App, feishu_settings: Settings, set_env, conn: redis.Redis) -> Callable[[Callable[[Hub], None]], Hub]:  # noqa: ANN001
    """Runs a test's cases against one app serving two bots: "default" (Encrypt Key and token), "plain" (token only)."""
    plain_app = feishu.add_app(verification_token="plain-token")
    settings = set_env(feishu_bots=json.dumps({"plain": {"app_id": plain_app.app_id, "app_secret": plain_app.app_secret, "verification_token": plain_app.verification_token}}))
    api = FastAPI()
    api.include_router(build_router(settings, conn))

    def run(test: Callable[[Hub], None]) -> Hub:
        # httpx's ASGI transport on one event loop for all cases: Starlette's TestClient hops
        # threads at each request and would cost ten times as much. The app's lifespan ends
        # inside, so every metric it counted is in Redis afterwards.
        with asyncio.Runner() as loop:
            lifespan = api.router.lifespan_context(api)
            loop.run(lifespan.__aenter__())
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://hub")
            try:
                hub = Hub(loop, client, conn, settings, feishu.events(app), feishu.events(plain_app))
                # The counters' hash exists before the first case: from then on only a queued event adds keys.
                conn.hincrby(COUNTERS, "fuzz_started", 1)
                hub.check_a_genuine_event_is_queued_once()
                test(hub)
                hub.check_a_genuine_event_is_queued_once()
                hub.check_a_genuine_event_is_queued_once(plain=True)
            finally:
                loop.run(client.aclose())
                loop.run(lifespan.__aexit__(None, None, None))
        return hub

    return run


SHAPES: dict[str, Callable[[Events], dict]] = {
    "image": lambda e: e.image(chat_id(), b"png", mentions=("ou_someone", "ou_other")),
    "post": lambda e: e.post(chat_id(), ["caption", b"one", "between", b"two"], title="Title"),
    "text": lambda e: e.text(chat_id(), "hello"),
    "other": lambda e: e.other("im.chat.member.bot.added_v1"),
    "v1_image": lambda e: e.v1_image(chat_id(), b"png", is_mention=True),
    "v1_post": lambda e: e.v1_post(chat_id(), "two pictures", [b"1", b"2"], title="Title"),
    "url_verification": lambda e: e.url_verification(),
}


def test_genuine_events_with_any_field_mutated(hub):  # noqa: ANN001
    @FUZZ
    @given(data=st.data(), shape=st.sampled_from(sorted(SHAPES)), plain=st.booleans())
    def case(h: Hub, data: st.DataObject, shape: str, plain: bool) -> None:
        events = h.plain if plain else h.default
        tree, done = data.draw(mutated(SHAPES[shape](events)), label="mutations")
        plaintext = dump(tree).encode()
        if len(plaintext) > MAX_BODY // 2:
            plaintext = plaintext[: MAX_BODY // 2]  # still bad JSON, and the encrypted body stays under the limit
        path, body, headers = h.seal(events, plaintext)
        before = h.state()
        response = h.post(path, body, headers)
        assert response.status_code < 500, (done, response.text)
        answer = response.json()
        if response.status_code == 200 and answer.get("status") == "queued":
            images = h.images_since(before)
            assert images, done
            parsed = json.loads(plaintext)
            message_id = parsed["event"]["message"]["message_id"] if "schema" in parsed else parsed["event"]["open_message_id"]
            assert all(image.message_id == message_id for image in images), done
            assert all(len(image.image_key) <= MAX_ID and not _surrogate(image.image_key + image.chat_id + image.context) for image in images)
        elif answer.get("status") == "duplicate":
            # A mutation can make two cases share a message id: the second is a re-send, and reads nothing.
            assert response.status_code == 200 and h.images_since(before) == [], done
        else:
            assert h.state() == before, (done, response.status_code, answer)
        if never_readable(plaintext):
            assert response.status_code in (200, 400, 401) and answer.get("status") != "queued", (done, answer)
            assert "challenge" not in answer, done
        if "challenge" in answer:
            assert answer["challenge"] == json.loads(plaintext)["challenge"]
        h.check_a_genuine_event_is_queued_once(plain)

    hub(case).check_metrics()


# Any bot id but one that changes the route itself ("/", "..").
BOT_IDS = st.text(st.characters(codec="utf-8", exclude_characters="/.\\"), min_size=1, max_size=20)


def test_unsigned_and_garbage_bodies(hub):  # noqa: ANN001
    bodies = st.one_of(
        st.binary(max_size=4096),
        JSON_VALUES.map(lambda v: dump(v).encode()),
        NESTED.map(lambda raw: raw.text.encode()),
        st.integers(1, 3000).map(lambda n: b'{"encrypt":' * n + b'""' + b"}" * n),
        st.one_of(JSON_VALUES, ANY_TEXT).map(lambda v: dump({"encrypt": v}).encode()),
        # Well-formed ciphertext under the default bot's key, of anything (a shape's name: that
        # event, token included), sealed in the case: still unsigned.
        st.one_of(JSON_VALUES.map(dump), st.sampled_from([s for s in SHAPES if s != "url_verification"])).map(lambda v: ("encrypt", v)),
    )
    paths_ = st.one_of(st.sampled_from([DEFAULT_PATH, PLAIN_PATH]), BOT_IDS.map(lambda s: f"/feishu/{quote(s, safe='')}/events"))
    garbage_headers = st.lists(
        st.tuples(st.sampled_from([b"x-lark-request-timestamp", b"x-lark-request-nonce", b"x-lark-signature", b"content-type", b"x-other"]), st.binary(max_size=64)),
        max_size=4,
    )

    @FUZZ
    @given(body=bodies, path=paths_, headers=garbage_headers)
    def case(h: Hub, body: Any, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        if isinstance(body, tuple):
            inner = SHAPES[body[1]](h.default) if body[1] in SHAPES else body[1]
            plaintext = json.dumps(inner).encode() if isinstance(inner, dict) else inner.encode()
            body = json.dumps({"encrypt": Cipher(h.default.app.encrypt_key).encrypt(plaintext)}).encode()
        before = h.state()
        response = h.post(path, body, headers)
        # Unsigned, or signed with nonsense: refused, whatever it holds. (A body can only be a
        # genuine URL check with the bot's token, which this garbage never carries.)
        assert 400 <= response.status_code < 500, (path, body[:200], response.text)
        assert h.state() == before
        h.now_and_then_check_a_genuine_event(plain=path == PLAIN_PATH)

    hub(case).check_metrics()


TIMESTAMPS = st.one_of(
    st.integers(-400, 400).map(lambda skew: ("now", skew)),
    st.integers(-(10**15), 10**15).map(lambda n: str(n).encode()),
    st.floats().map(lambda f: repr(f).encode()),
    st.sampled_from([b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e999", b"1e3", b"0x10", b" 1", b"1 ", b"", b"\xef\xbc\x91", b"\xb2", b"+1"]),
    st.binary(max_size=24),
)
HEADER_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,24}", fullmatch=True).filter(
    lambda n: not n.lower().startswith("x-lark") and n.lower() not in ("content-length", "transfer-encoding", "host")
)


def test_garbage_headers_around_a_genuine_event(hub):  # noqa: ANN001
    @FUZZ
    @given(
        timestamp=TIMESTAMPS,
        nonce=st.one_of(st.just(b"n0nce"), st.binary(max_size=40)),
        resign=st.booleans(),
        signature_value=st.one_of(st.binary(max_size=80), st.text(max_size=64).map(str.encode)),
        keep=st.tuples(st.booleans(), st.booleans(), st.booleans()) | st.just((True, True, True)),
        extra=st.lists(st.tuples(HEADER_NAMES.map(str.encode), st.binary(max_size=60)), max_size=5),
        length=st.one_of(st.none(), st.binary(max_size=14), st.integers(0, 10**13).map(lambda n: str(n).encode())),
    )
    def case(h: Hub, timestamp: Any, nonce: bytes, resign: bool, signature_value: bytes, keep: tuple[bool, bool, bool], extra: list, length: bytes | None) -> None:
        payload = h.default.image(chat_id(), b"png")
        _, body, _ = h.seal(h.default, json.dumps(payload).encode())
        skew = None
        if isinstance(timestamp, tuple):
            skew = timestamp[1]
            timestamp = str(int(time.time()) + skew).encode()
        # Starlette hands header values over as latin-1 text; the signature is over that text.
        if resign:
            signature_value = signature(timestamp.decode("latin-1"), nonce.decode("latin-1"), h.default.app.encrypt_key, body).encode()
        trio = [(b"x-lark-request-timestamp", timestamp), (b"x-lark-request-nonce", nonce), (b"x-lark-signature", signature_value)]
        headers = [pair for pair, kept in zip(trio, keep) if kept] + extra
        if length is not None:
            headers.append((b"content-length", length))
        before = h.state()
        response = h.post(DEFAULT_PATH, body, headers)
        assert response.status_code < 500, response.text
        oversized = length is not None and length.isdigit() and int(length) > MAX_BODY
        fresh = skew is not None and abs(skew) <= 295
        stale = skew is None or abs(skew) >= 305
        if oversized:
            assert response.status_code == 413
        elif all(keep) and resign and fresh:
            assert response.status_code == 200 and response.json()["status"] == "queued", response.text
            [image] = h.images_since(before)
            assert image.message_id == payload["event"]["message"]["message_id"]
        elif not all(keep) or not resign or stale:
            # Valid-looking digits far from now, NaN, inf, garbage: all outside the replay window.
            assert response.status_code == 401, response.text
        if response.status_code != 200:
            assert h.state() == before
        h.now_and_then_check_a_genuine_event()

    hub(case).check_metrics()
