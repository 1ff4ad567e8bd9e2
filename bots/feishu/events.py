"""Feishu event JSON (schema 2.0 and the older 1.0 envelope) parsed once into frozen values.

Raw Feishu dictionaries never leave this module: the rest of the bot sees `UrlVerification`,
`MessageEvent` or `OtherEvent`. Every field read is checked for its type, length and encoding
here, so nothing further on meets a list where it expects an id (or a string that cannot be
written as UTF-8): anything else is a `MalformedEvent`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

URL_VERIFICATION = "url_verification"
MESSAGE_RECEIVED = "im.message.receive_v1"
IMAGE_TYPES = ("image", "post", "file")
# Text messages carry no images, but may ask the bot something ("@bot search invoice", "@bot help").
TEXT_TYPES = ("text",)
# Post elements whose words are kept as the images' context.
TEXT_TAGS = {"text": "text", "a": "text", "at": "user_name", "code_block": "text", "md": "text"}
# Feishu's ids and keys are a few dozen characters; a longer one is not from Feishu, and each
# becomes part of Redis keys and of every job of its message.
MAX_ID = 256
MAX_NAME = 1024  # a file name, as Feishu shows it


class MalformedEvent(ValueError):
    """The JSON is not an event Feishu would send; the message says which part is wrong.

    Messages name fields, never their values: they are logged and answered to the sender.
    """


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
    file_name: str = ""  # a file message's file name
    parent_id: str = ""  # the message this one replies to


Event = UrlVerification | MessageEvent | OtherEvent


def parse_event(data: Any) -> Event:
    if not isinstance(data, dict):
        raise MalformedEvent("the event is not a JSON object")
    if data.get("type") == URL_VERIFICATION:
        return UrlVerification(challenge=_str(data, "challenge", required=True), token=_str(data, "token"))
    if "schema" in data:
        _str(data, "schema", required=True, limit=MAX_ID)
        return _schema2(data)
    if "uuid" in data and isinstance(data.get("event"), dict):
        return _schema1(data)
    raise MalformedEvent("neither a schema 2.0 event, a schema 1.0 event nor a url_verification")


def token_of(data: Any) -> str:
    """The Verification Token an event carries, where `parse_event` would read it; "" when there is none.

    Checked before the event is parsed, so that only a genuine event's malformation is acknowledged.
    """
    if not isinstance(data, dict):
        return ""
    holder = data.get("header") if "schema" in data and data.get("type") != URL_VERIFICATION else data
    token = holder.get("token") if isinstance(holder, dict) else None
    return token if isinstance(token, str) else ""


def _schema2(data: dict[str, Any]) -> Event:
    header = _dict(data, "header")
    event_type = _str(header, "event_type", required=True, limit=MAX_ID)
    event_id, token, app_id = _str(header, "event_id", limit=MAX_ID), _str(header, "token"), _str(header, "app_id", limit=MAX_ID)
    if event_type != MESSAGE_RECEIVED:
        return OtherEvent("2.0", event_id, event_type, token, app_id)
    event = _dict(data, "event")
    message = _dict(event, "message")
    sender = _dict(event, "sender")
    sender_ids = _dict(sender, "sender_id", required=False)
    open_id, user_id = _str(sender_ids, "open_id", limit=MAX_ID), _str(sender_ids, "user_id", limit=MAX_ID)
    message_type = _str(message, "message_type", required=True, limit=MAX_ID)
    image_keys, text, file_name = _content(message_type, message.get("content"))
    return MessageEvent(
        schema="2.0",
        event_id=event_id,
        event_type=event_type,
        token=token,
        app_id=app_id,
        message_id=_str(message, "message_id", required=True, limit=MAX_ID),
        chat_id=_str(message, "chat_id", required=True, limit=MAX_ID),
        chat_type=_str(message, "chat_type", limit=MAX_ID) or "group",
        message_type=message_type,
        sender_id=open_id or user_id,
        sender_type=_str(sender, "sender_type", limit=MAX_ID) or "user",
        sent_at=_iso_from_millis(_time(message, "create_time")),
        image_keys=image_keys,
        text=text,
        file_name=file_name,
        parent_id=_str(message, "parent_id", limit=MAX_ID),
        mentions=_mentions(message.get("mentions")),
        mentions_bot=None,
    )


def _schema1(data: dict[str, Any]) -> Event:
    event = data["event"]
    event_type = _str(event, "type", required=True, limit=MAX_ID)
    event_id, token, app_id = _str(data, "uuid", limit=MAX_ID), _str(data, "token"), _str(event, "app_id", limit=MAX_ID)
    if event_type != "message":
        return OtherEvent("1.0", event_id, event_type, token, app_id)
    message_type = _str(event, "msg_type", required=True, limit=MAX_ID)
    if message_type == "image":
        image_keys: tuple[str, ...] = (_str(event, "image_key", required=True, limit=MAX_ID),)
        text = ""
    elif message_type == "post":
        image_keys = _image_keys(event.get("image_keys"))
        text = "\n".join(t for t in (_str(event, "title"), _str(event, "text")) if t)
    else:
        image_keys, text = (), _str(event, "text")
    chat_type = _str(event, "chat_type", limit=MAX_ID)
    is_mention = event.get("is_mention")
    if is_mention is not None and not isinstance(is_mention, bool):
        raise MalformedEvent("'is_mention' is not true or false")
    return MessageEvent(
        schema="1.0",
        event_id=event_id,
        event_type="message",
        token=token,
        app_id=app_id,
        message_id=_str(event, "open_message_id", required=True, limit=MAX_ID),
        chat_id=_str(event, "open_chat_id", required=True, limit=MAX_ID),
        chat_type="p2p" if chat_type == "private" else chat_type or "group",
        message_type=message_type,
        sender_id=_str(event, "open_id", limit=MAX_ID),
        sender_type="user",
        sent_at=_iso_from_seconds(_time(data, "ts")),
        image_keys=image_keys,
        text=text,
        mentions=(),
        mentions_bot=bool(is_mention),
    )


def _content(message_type: str, raw: Any) -> tuple[tuple[str, ...], str, str]:
    """Image (or file) keys in reading order, the words around them, and a file's name; other message
    types carry no images."""
    if message_type not in IMAGE_TYPES + TEXT_TYPES:
        return (), "", ""
    if not isinstance(raw, str):
        raise MalformedEvent("message.content is not a JSON string")
    try:
        content = json.loads(raw)
    except ValueError as exc:
        raise MalformedEvent(f"message.content is not JSON: {exc}") from None
    except RecursionError:
        raise MalformedEvent("message.content is nested too deep") from None
    if not isinstance(content, dict):
        raise MalformedEvent("message.content is not a JSON object")
    if message_type == "image":
        return (_str(content, "image_key", required=True, limit=MAX_ID),), "", ""
    if message_type == "text":
        return (), _str(content, "text"), ""
    if message_type == "file":
        return (_str(content, "file_key", required=True, limit=MAX_ID),), "", _str(content, "file_name", limit=MAX_NAME)
    if "content" not in content:
        # Some senders wrap a post per locale ({"zh_cn": {...}}); take the first.
        content = next((v for v in content.values() if isinstance(v, dict) and "content" in v), content)
    paragraphs = content.get("content")
    if paragraphs is None:
        paragraphs = []
    if not isinstance(paragraphs, list):
        raise MalformedEvent("post content is not a list of paragraphs")
    keys: list[str] = []
    title = _str(content, "title")
    lines = [title] if title else []
    for paragraph in paragraphs:
        if not isinstance(paragraph, list):
            raise MalformedEvent("a post paragraph is not a list of elements")
        words = []
        for element in paragraph:
            if not isinstance(element, dict):
                raise MalformedEvent("a post element is not an object")
            tag = _str(element, "tag", limit=MAX_ID)
            if tag == "img":
                keys.append(_str(element, "image_key", required=True, limit=MAX_ID))
            elif tag in TEXT_TAGS:
                word = _str(element, TEXT_TAGS[tag])
                if word:
                    words.append(("@" if tag == "at" else "") + word)
        line = "".join(words).strip()
        if line:
            lines.append(line)
    return tuple(keys), "\n".join(lines), ""


def resources_of(message_type: str, content: str) -> tuple[tuple[str, ...], str]:
    """The image (or file) keys and the file name of an earlier message, from `message.get`'s msg_type
    and body.content; none for a message that carries neither. Raises MalformedEvent."""
    if message_type not in IMAGE_TYPES:
        return (), ""
    keys, _text, file_name = _content(message_type, content)
    return keys, file_name


def _mentions(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MalformedEvent("message.mentions is not a list")
    open_ids = []
    for mention in raw:
        if not isinstance(mention, dict):
            raise MalformedEvent("a mention is not an object")
        open_id = _str(_dict(mention, "id", required=False), "open_id", limit=MAX_ID)
        if open_id:
            open_ids.append(open_id)
    return tuple(open_ids)


def _image_keys(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MalformedEvent("event.image_keys is not a list of strings")
    return tuple(_text(key, "event.image_keys[]", required=True, limit=MAX_ID) for key in raw)


def _dict(data: dict[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise MalformedEvent(f"{key!r} is missing or not an object")
    return value


def _str(data: dict[str, Any], key: str, *, required: bool = False, limit: int = 0) -> str:
    return _text(data.get(key), key, required=required, limit=limit)


def _text(value: Any, name: str, *, required: bool = False, limit: int = 0) -> str:
    if value is None or value == "":
        if required:
            raise MalformedEvent(f"{name!r} is missing")
        return ""
    if not isinstance(value, str):
        raise MalformedEvent(f"{name!r} is not a string")
    if limit and len(value) > limit:
        raise MalformedEvent(f"{name!r} is longer than {limit} characters")
    try:
        # JSON's lone \ud800 escapes make strings that no Redis key, log file or reply can carry.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedEvent(f"{name!r} is not valid Unicode") from None
    return value


def _time(data: dict[str, Any], key: str) -> str | int | float | None:
    """A time as Feishu writes it (a string of digits, or a number); its value is checked by the caller."""
    value = data.get(key)
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    return _str(data, key, limit=64)


def _iso_from_millis(value: str | int | float | None) -> str:
    try:
        return datetime.fromtimestamp(int(value) / 1000, timezone.utc).isoformat(timespec="seconds")  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _iso_from_seconds(value: str | int | float | None) -> str:
    try:
        return datetime.fromtimestamp(float(value), timezone.utc).isoformat(timespec="seconds")  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
