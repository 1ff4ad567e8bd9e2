"""The webhook gate and the event parser, on requests sealed exactly as Feishu seals them (no network)."""

from __future__ import annotations

import base64
import json
import time

import pytest

from bots.feishu.bots import FeishuBot
from bots.feishu.crypto import Cipher, signature
from bots.feishu.events import MalformedEvent, MessageEvent, OtherEvent, UrlVerification, parse_event
from bots.feishu.gate import Gate, Refused, Unreadable
from tests.emulators.feishu import App, Events, FeishuEmulator

KEY = "k3y-for-tests"
TOKEN = "t0ken-for-tests"


class Headers(dict):
    """Case-insensitive, as Starlette's request headers are."""

    def get(self, key, default=None):  # noqa: ANN001, ANN201
        for name, value in self.items():
            if name.lower() == key.lower():
                return value
        return default


@pytest.fixture(scope="module")
def events() -> Events:
    # Not started: only the message registry and sealing are used.
    emulator = FeishuEmulator()
    return emulator.events(App("cli_test", "secret", KEY, TOKEN))


def bot(**changes: object) -> FeishuBot:
    values = dict(bot_id="default", app_id="cli_test", app_secret="secret", encrypt_key=KEY, verification_token=TOKEN)
    values.update(changes)
    return FeishuBot(**values)  # type: ignore[arg-type]


def open_sealed(gate: Gate, sealed: tuple[dict[str, str], bytes]):  # noqa: ANN201
    headers, body = sealed
    return gate.open(Headers(headers), body)


def test_decryption_matches_lark_oapi():
    from lark_oapi.core.utils import AESCipher

    sealed = Cipher(KEY).encrypt(b'{"hello": "\xe4\xbd\xa0\xe5\xa5\xbd"}')
    assert AESCipher(KEY).decrypt_str(sealed) == '{"hello": "你好"}'
    assert Cipher(KEY).decrypt(sealed) == '{"hello": "你好"}'.encode()


def test_signed_encrypted_image_event_opens(events):
    event = open_sealed(Gate(bot(), 300), events.seal(events.image("oc_1", b"png")))
    assert isinstance(event, MessageEvent)
    assert event.message_type == "image" and event.chat_id == "oc_1" and len(event.image_keys) == 1


def test_header_names_are_case_insensitive(events):
    headers, body = events.seal(events.image("oc_1", b"png"))
    lowered = Headers({k.lower(): v for k, v in headers.items()})
    assert isinstance(Gate(bot(), 300).open(lowered, body), MessageEvent)


@pytest.mark.parametrize(
    "tamper, status, reason",
    [
        ("signature", 401, "signature does not match"),
        ("body", 401, "signature does not match"),
        ("stale", 401, "stale request"),
        ("future", 401, "stale request"),
        ("no-headers", 401, "missing X-Lark-Signature"),
        ("half-headers", 401, "incomplete"),
        ("wrong-token", 401, "Verification Token"),
    ],
)
def test_forged_or_stale_requests_are_refused(events, tamper, status, reason):
    payload = events.image("oc_1", b"png")
    if tamper == "wrong-token":
        payload["header"]["token"] = "guessed"
    timestamp = {"stale": str(int(time.time()) - 3600), "future": str(int(time.time()) + 3600)}.get(tamper)
    headers, body = events.seal(payload, timestamp=timestamp)
    if tamper == "signature":
        headers["X-Lark-Signature"] = "0" * 64
    elif tamper == "body":
        body = body.replace(b'"}', b'A"}')
    elif tamper == "no-headers":
        headers = {"Content-Type": "application/json"}
    elif tamper == "half-headers":
        del headers["X-Lark-Request-Nonce"]
    with pytest.raises(Refused) as refused:
        Gate(bot(), 300).open(Headers(headers), body)
    assert refused.value.status == status
    assert reason in refused.value.reason


def resign(body: bytes) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), "n"
    return {"X-Lark-Request-Timestamp": timestamp, "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": signature(timestamp, nonce, KEY, body)}


@pytest.mark.parametrize(
    "body, status, reason",
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "not a JSON object"),
        (json.dumps({"encrypt": "not base64 !!"}).encode(), 400, "cannot decrypt"),
        (json.dumps({"encrypt": base64.b64encode(b"x" * 40).decode()}).encode(), 400, "cannot decrypt"),
        (json.dumps({"encrypt": Cipher("another key").encrypt(b'{"schema": "2.0"}')}).encode(), 400, "cannot decrypt"),
        (json.dumps({"encrypt": Cipher(KEY).encrypt(b"\xff\xfe not utf-8")}).encode(), 400, "decrypted event is not JSON"),
        (json.dumps({"encrypt": Cipher(KEY).encrypt(b"[" * 5000 + b"]" * 5000)}).encode(), 400, "nested too deep"),
        # Without the Verification Token inside, a signed body is not known to be Feishu's.
        (json.dumps({"encrypt": Cipher(KEY).encrypt(b'{"schema": "2.0", "header": {}}')}).encode(), 401, "Verification Token"),
        (json.dumps({"hello": "world"}).encode(), 401, "Verification Token"),
    ],
)
def test_broken_bodies_are_refused_even_when_signed(body, status, reason):
    with pytest.raises(Refused) as refused:
        Gate(bot(), 300).open(Headers(resign(body)), body)
    assert (refused.value.status, reason in refused.value.reason) == (status, True)


def test_url_verification_plain_and_encrypted(events):
    challenge = events.url_verification("abc")
    gate = Gate(bot(), 300)
    encrypted_unsigned = json.dumps({"encrypt": Cipher(KEY).encrypt(json.dumps(challenge).encode())}).encode()
    assert gate.open(Headers({}), encrypted_unsigned) == UrlVerification("abc", TOKEN)
    assert open_sealed(gate, events.seal(challenge)) == UrlVerification("abc", TOKEN)
    plain_gate = Gate(bot(encrypt_key=""), 300)
    assert plain_gate.open(Headers({}), json.dumps(challenge).encode()) == UrlVerification("abc", TOKEN)
    with pytest.raises(Refused):
        plain_gate.open(Headers({}), json.dumps({**challenge, "token": "guessed"}).encode())


def test_token_only_bot_checks_the_token_and_refuses_encrypted_bodies(events):
    gate = Gate(bot(encrypt_key=""), 300)
    payload = events.image("oc_1", b"png")
    assert isinstance(gate.open(Headers({}), json.dumps(payload).encode()), MessageEvent)
    payload["header"]["token"] = "guessed"
    with pytest.raises(Refused):
        gate.open(Headers({}), json.dumps(payload).encode())
    with pytest.raises(Refused) as refused:
        gate.open(Headers({}), json.dumps({"encrypt": Cipher(KEY).encrypt(b"{}")}).encode())
    assert "no Encrypt Key" in refused.value.reason


def test_key_only_bot_accepts_a_signed_plain_body(events):
    gate = Gate(bot(verification_token=""), 300)
    headers, body = events.seal(events.image("oc_1", b"png"), encrypt=False)
    assert isinstance(gate.open(Headers(headers), body), MessageEvent)


def test_replay_window_zero_disables_the_time_check(events):
    headers, body = events.seal(events.image("oc_1", b"png"), timestamp="1000")
    assert isinstance(Gate(bot(), 0).open(Headers(headers), body), MessageEvent)


def test_post_keeps_every_image_in_order_and_its_text(events):
    a, b = b"first", b"second"
    payload = events.post("oc_9", ["Receipts from Tuesday", a, "and the second one", b], title="Expenses")
    event = parse_event(payload)
    assert isinstance(event, MessageEvent)
    message = events.emulator.messages[event.message_id]
    assert [message.images[k] for k in event.image_keys] == [a, b]
    assert event.text == "Expenses\nReceipts from Tuesday\nand the second one"


def test_post_wrapped_per_locale_and_mixed_paragraphs():
    content = {"zh_cn": {"title": "T", "content": [[{"tag": "text", "text": "see "}, {"tag": "at", "user_name": "Li"}, {"tag": "img", "image_key": "img_a"}], [{"tag": "img", "image_key": "img_b"}]]}}
    payload = {
        "schema": "2.0",
        "header": {"event_id": "e", "event_type": "im.message.receive_v1", "token": "t", "app_id": "cli"},
        "event": {
            "sender": {"sender_id": {"open_id": "ou_1"}, "sender_type": "user"},
            "message": {"message_id": "om_1", "chat_id": "oc_1", "chat_type": "p2p", "message_type": "post", "content": json.dumps(content), "create_time": "1700000000000"},
        },
    }
    event = parse_event(payload)
    assert isinstance(event, MessageEvent)
    assert event.image_keys == ("img_a", "img_b") and event.text == "T\nsee @Li"
    assert event.chat_type == "p2p" and event.sent_at == "2023-11-14T22:13:20+00:00"


def test_schema_1_envelopes(events):
    image = parse_event(events.v1_image("oc_2", b"x", chat_type="p2p", is_mention=True))
    assert isinstance(image, MessageEvent) and image.schema == "1.0"
    assert image.chat_type == "p2p" and image.mentions_bot is True and len(image.image_keys) == 1
    post = parse_event(events.v1_post("oc_2", "two pictures", [b"1", b"2"], title="Hi"))
    assert isinstance(post, MessageEvent) and len(post.image_keys) == 2 and post.text == "Hi\ntwo pictures"
    assert post.token == TOKEN and post.event_id


def test_other_events_are_recognised_not_refused(events):
    assert isinstance(parse_event(events.other("im.chat.member.bot.added_v1")), OtherEvent)
    assert isinstance(parse_event({"uuid": "u", "token": "t", "event": {"type": "add_bot"}}), OtherEvent)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p["event"]["message"].pop("message_id"),
        lambda p: p["event"]["message"].update(content="{broken"),
        lambda p: p["event"]["message"].update(content=json.dumps({"no_key": 1})),
        lambda p: p["event"].pop("message"),
        lambda p: p.pop("header"),
    ],
)
def test_malformed_message_events(events, mutate):
    payload = events.image("oc_1", b"png")
    mutate(payload)
    with pytest.raises(MalformedEvent):
        parse_event(payload)


@pytest.mark.parametrize("body", [b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000])
@pytest.mark.parametrize("key", [KEY, ""])
def test_a_deeply_nested_body_is_refused_before_any_signature_check(body, key):
    with pytest.raises(Refused) as refused:
        Gate(bot(encrypt_key=key), 300).open(Headers({}), body)
    assert (refused.value.status, refused.value.code) == (400, "not_json")
    assert "nested too deep" in refused.value.reason


@pytest.mark.parametrize("timestamp", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "9" * 400, "-5", "-0", "abc", "", " 1700000000", "1700000000.5", "1_700_000_000", "\uff11\uff17"])
@pytest.mark.parametrize("window", [300, 0])
def test_a_timestamp_that_is_not_whole_seconds_fails_the_replay_window(events, timestamp, window):
    payload = events.image("oc_1", b"png")
    # Correctly signed over this very timestamp: only the replay window can refuse it.
    headers, body = events.seal(payload, timestamp=timestamp or " ")
    headers["X-Lark-Request-Timestamp"] = timestamp
    headers["X-Lark-Signature"] = signature(timestamp, headers["X-Lark-Request-Nonce"], KEY, body)
    with pytest.raises(Refused) as refused:
        Gate(bot(), window).open(Headers(headers), body)
    assert (refused.value.status, refused.value.code) == (401, "replay")


def test_a_genuine_event_that_cannot_be_read_is_unreadable_not_refused(events):
    payload = events.image("oc_1", b"png")
    payload["event"]["message"]["mentions"] = 5
    assert isinstance(open_sealed(Gate(bot(), 300), events.seal(payload)), Unreadable)
    token_only = Gate(bot(encrypt_key=""), 300)
    assert isinstance(token_only.open(Headers({}), json.dumps(payload).encode()), Unreadable)
    # Not genuine: unsigned for a bot with an Encrypt Key, or without the right token.
    with pytest.raises(Refused) as unsigned:
        Gate(bot(), 300).open(Headers({}), json.dumps({"encrypt": Cipher(KEY).encrypt(json.dumps(payload).encode())}).encode())
    assert unsigned.value.status == 401
    payload["header"]["token"] = "guessed"
    with pytest.raises(Refused) as guessed:
        token_only.open(Headers({}), json.dumps(payload).encode())
    assert guessed.value.status == 401


def _set(path: str, value: object):  # noqa: ANN202
    """A mutation of a schema 2.0 image event: `path` is dotted; "content." reaches into message.content's JSON."""

    def mutate(payload: dict) -> None:
        message = payload["event"]["message"]
        if path.startswith("content."):
            content = json.loads(message["content"])
            content[path.removeprefix("content.")] = value
            message["content"] = json.dumps(content)
            return
        *parents, last = path.split(".")
        node = payload
        for name in parents:
            node = node[name]
        node[last] = value

    return mutate


def _post_element(element: object):  # noqa: ANN202
    def mutate(payload: dict) -> None:
        message = payload["event"]["message"]
        message["message_type"] = "post"
        message["content"] = json.dumps({"title": "t", "content": [[{"tag": "img", "image_key": "img_1"}, element]]})

    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        _set("event.message.mentions", 5),
        _set("event.message.mentions", "ou_someone"),
        _set("event.message.mentions", {"id": {"open_id": "ou_x"}}),
        _set("event.message.mentions", ["ou_x"]),
        _set("event.message.mentions", [{"id": "ou_x"}]),
        _set("event.message.mentions", [{"id": {"open_id": 7}}]),
        _set("event.message.message_id", 12345),
        _set("event.message.message_id", ["om_1"]),
        _set("event.message.message_id", "om_" + "x" * 5000),
        _set("event.message.message_id", "om_\ud800"),
        _set("event.message.chat_id", {"id": "oc_1"}),
        _set("event.message.chat_type", ["group"]),
        _set("event.message.message_type", None),
        _set("event.message.content", {"image_key": "img_1"}),
        _set("event.message.create_time", ["1700000000000"]),
        _set("event.sender.sender_id", ["ou_1"]),
        _set("event.sender.sender_id.open_id", 1),
        _set("event.sender.sender_type", True),
        _set("event.sender", "ou_1"),
        _set("header.event_type", 1.5),
        _set("header.event_id", {"a": 1}),
        _set("header.app_id", ["cli"]),
        _set("schema", ["2.0"]),
        _set("content.image_key", 42),
        _set("content.image_key", "img_\udfff"),
        _post_element("text"),
        _post_element({"tag": ["img"], "image_key": "img_2"}),
        _post_element({"tag": "img", "image_key": 2}),
        _post_element({"tag": "img"}),
        _post_element({"tag": "text", "text": {"bold": "x"}}),
        _post_element({"tag": "at", "user_name": 3}),
    ],
)
def test_every_field_read_is_type_checked(events, mutate):
    payload = events.image("oc_1", b"png")
    mutate(payload)
    with pytest.raises(MalformedEvent):
        parse_event(payload)


@pytest.mark.parametrize(
    "field, value",
    [("is_mention", "yes"), ("image_keys", "img_1"), ("image_keys", [1]), ("open_message_id", 5), ("open_chat_id", None), ("msg_type", []), ("image_key", {"k": 1})],
)
def test_schema_1_fields_are_type_checked(events, field, value):
    payload = events.v1_post("oc_2", "two", [b"1"]) if field == "image_keys" else events.v1_image("oc_2", b"x")
    payload["event"][field] = value
    with pytest.raises(MalformedEvent):
        parse_event(payload)
    payload = events.v1_image("oc_2", b"x")
    payload["ts"] = ["1700000000"]
    with pytest.raises(MalformedEvent):
        parse_event(payload)


def test_numbers_for_times_and_a_missing_mentions_list_are_fine(events):
    payload = events.image("oc_1", b"png")
    payload["event"]["message"]["create_time"] = 1700000000000
    del payload["event"]["message"]["mentions"]
    event = parse_event(payload)
    assert isinstance(event, MessageEvent) and event.sent_at == "2023-11-14T22:13:20+00:00" and event.mentions == ()
    payload["event"]["message"]["create_time"] = "not a time"
    assert parse_event(payload).sent_at == ""
