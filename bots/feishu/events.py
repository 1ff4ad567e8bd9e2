"""Feishu event JSON (schema 2.0 and the older 1.0 envelope) parsed once into frozen values.

Raw Feishu dictionaries never leave this module: the rest of the bot sees `UrlVerification`,
`MessageEvent` or `OtherEvent`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

URL_VERIFICATION = "url_verification"
MESSAGE_RECEIVED = "im.message.receive_v1"
IMAGE_TYPES = ("image", "post")
# Post elements whose words are kept as the images' context.
TEXT_TAGS = {"text": "text", "a": "text", "at": "user_name", "code_block": "text", "md": "text"}


class MalformedEvent(ValueError):
    """The JSON is not an event Feishu would send; the message says which part is wrong."""


@dataclass(frozen=True)
class UrlVerification:
    challenge: str
    token: str


@dataclass(frozen=True)
class OtherEvent:
    """An event this hub does not act on; acknowledged and dropped."""

    schema: str
    event_id: str
    event_type: str
    token: str
    app_id: str


@dataclass(frozen=True)
class MessageEvent:
    schema: str  # "2.0" or "1.0"
    event_id: str
    event_type: str
    token: str
    app_id: str
    message_id: str
    chat_id: str
    chat_type: str  # "p2p" or "group"
    message_type: str
    sender_id: str
    sender_type: str  # "user" for people; "app" and others are bots
    sent_at: str  # ISO 8601, UTC; empty when Feishu gave no time
    image_keys: tuple[str, ...]
    text: str
    mentions: tuple[str, ...]  # open_ids of everyone @-mentioned
    mentions_bot: bool | None  # schema 1.0 says so itself; None when only `mentions` can tell


Event = UrlVerification | MessageEvent | OtherEvent


def parse_event(data: Any) -> Event:
    if not isinstance(data, dict):
        raise MalformedEvent("the event is not a JSON object")
    if data.get("type") == URL_VERIFICATION:
        return UrlVerification(challenge=_str(data, "challenge", required=True), token=_str(data, "token"))
    if data.get("schema"):
        return _schema2(data)
    if "uuid" in data and isinstance(data.get("event"), dict):
        return _schema1(data)
    raise MalformedEvent("neither a schema 2.0 event, a schema 1.0 event nor a url_verification")


def _schema2(data: dict[str, Any]) -> Event:
    header = _dict(data, "header")
    event_type = _str(header, "event_type", required=True)
    event_id, token, app_id = _str(header, "event_id"), _str(header, "token"), _str(header, "app_id")
    if event_type != MESSAGE_RECEIVED:
        return OtherEvent("2.0", event_id, event_type, token, app_id)
    event = _dict(data, "event")
    message = _dict(event, "message")
    sender = _dict(event, "sender")
    sender_ids = sender.get("sender_id") if isinstance(sender.get("sender_id"), dict) else {}
    message_type = _str(message, "message_type", required=True)
    image_keys, text = _content(message_type, message.get("content"))
    mentions = tuple(
        m["id"]["open_id"]
        for m in message.get("mentions") or ()
        if isinstance(m, dict) and isinstance(m.get("id"), dict) and isinstance(m["id"].get("open_id"), str)
    )
    return MessageEvent(
        schema="2.0",
        event_id=event_id,
        event_type=event_type,
        token=token,
        app_id=app_id,
        message_id=_str(message, "message_id", required=True),
        chat_id=_str(message, "chat_id", required=True),
        chat_type=_str(message, "chat_type") or "group",
        message_type=message_type,
        sender_id=str(sender_ids.get("open_id") or sender_ids.get("user_id") or ""),
        sender_type=_str(sender, "sender_type") or "user",
        sent_at=_iso_from_millis(message.get("create_time")),
        image_keys=image_keys,
        text=text,
        mentions=mentions,
        mentions_bot=None,
    )


def _schema1(data: dict[str, Any]) -> Event:
    event = data["event"]
    event_type = _str(event, "type", required=True)
    event_id, token, app_id = _str(data, "uuid"), _str(data, "token"), _str(event, "app_id")
    if event_type != "message":
        return OtherEvent("1.0", event_id, event_type, token, app_id)
    message_type = _str(event, "msg_type", required=True)
    if message_type == "image":
        image_keys: tuple[str, ...] = (_str(event, "image_key", required=True),)
        text = ""
    elif message_type == "post":
        keys = event.get("image_keys") or ()
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise MalformedEvent("event.image_keys is not a list of strings")
        image_keys = tuple(keys)
        text = "\n".join(t for t in (_str(event, "title"), _str(event, "text")) if t)
    else:
        image_keys, text = (), _str(event, "text")
    chat_type = _str(event, "chat_type")
    return MessageEvent(
        schema="1.0",
        event_id=event_id,
        event_type="message",
        token=token,
        app_id=app_id,
        message_id=_str(event, "open_message_id", required=True),
        chat_id=_str(event, "open_chat_id", required=True),
        chat_type="p2p" if chat_type == "private" else chat_type or "group",
        message_type=message_type,
        sender_id=_str(event, "open_id"),
        sender_type="user",
        sent_at=_iso_from_seconds(data.get("ts")),
        image_keys=image_keys,
        text=text,
        mentions=(),
        mentions_bot=bool(event.get("is_mention")),
    )


def _content(message_type: str, raw: Any) -> tuple[tuple[str, ...], str]:
    """Image keys in reading order and the words around them; other message types carry no images."""
    if message_type not in IMAGE_TYPES:
        return (), ""
    if not isinstance(raw, str):
        raise MalformedEvent("message.content is not a JSON string")
    try:
        content = json.loads(raw)
    except ValueError as exc:
        raise MalformedEvent(f"message.content is not JSON: {exc}") from None
    if not isinstance(content, dict):
        raise MalformedEvent("message.content is not a JSON object")
    if message_type == "image":
        return (_str(content, "image_key", required=True),), ""
    if "content" not in content:
        # Some senders wrap a post per locale ({"zh_cn": {...}}); take the first.
        content = next((v for v in content.values() if isinstance(v, dict) and "content" in v), content)
    paragraphs = content.get("content") or []
    if not isinstance(paragraphs, list):
        raise MalformedEvent("post content is not a list of paragraphs")
    keys: list[str] = []
    lines = [content["title"]] if isinstance(content.get("title"), str) and content["title"] else []
    for paragraph in paragraphs:
        if not isinstance(paragraph, list):
            raise MalformedEvent("a post paragraph is not a list of elements")
        words = []
        for element in paragraph:
            if not isinstance(element, dict):
                continue
            tag = element.get("tag")
            if tag == "img" and isinstance(element.get("image_key"), str):
                keys.append(element["image_key"])
            elif tag in TEXT_TAGS and isinstance(element.get(TEXT_TAGS[tag]), str):
                words.append(("@" if tag == "at" else "") + element[TEXT_TAGS[tag]])
        line = "".join(words).strip()
        if line:
            lines.append(line)
    return tuple(keys), "\n".join(lines)


def _dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise MalformedEvent(f"{key!r} is missing or not an object")
    return value


def _str(data: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise MalformedEvent(f"{key!r} is missing")
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise MalformedEvent(f"{key!r} is not a string")
    return str(value)


def _iso_from_millis(value: Any) -> str:
    try:
        return datetime.fromtimestamp(int(value) / 1000, timezone.utc).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _iso_from_seconds(value: Any) -> str:
    try:
        return datetime.fromtimestamp(float(value), timezone.utc).isoformat(timespec="seconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
