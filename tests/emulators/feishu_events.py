"""Feishu's side of events for the emulator: message events for messages it registers, sealed as Feishu seals them.

`Events` builds im.message.receive_v1 (schema 2.0) and schema 1.0 payloads, url_verification
challenges and other event types, encrypts them with AES-256-CBC under the app's Encrypt Key and
signs them with X-Lark-Request-Timestamp/Nonce/Signature, then posts them to a webhook.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx

from bots.feishu.crypto import Cipher, signature

if TYPE_CHECKING:
    from tests.emulators.feishu import App, FeishuEmulator


class Events:
    """Feishu's side for one app: message events for messages it registers, sealed as Feishu seals them."""

    def __init__(self, emulator: FeishuEmulator, app: App) -> None:
        self.emulator = emulator
        self.app = app
        self.cipher = Cipher(app.encrypt_key) if app.encrypt_key else None

    def image(self, chat_id: str, data: bytes, *, chat_type: str = "group", sender_type: str = "user", mentions: tuple[str, ...] = ()) -> dict:
        key = _image_key()
        message_id = self.emulator.add_message(chat_id, {key: data})
        return self._receive(message_id, chat_id, chat_type, "image", {"image_key": key}, sender_type, mentions)

    def post(self, chat_id: str, blocks: list[str | bytes], *, title: str = "", chat_type: str = "group", sender_type: str = "user") -> dict:
        """`blocks`: text lines and image bytes, one paragraph each, in order."""
        images: dict[str, bytes] = {}
        paragraphs = []
        for block in blocks:
            if isinstance(block, bytes):
                key = _image_key()
                images[key] = block
                paragraphs.append([{"tag": "img", "image_key": key, "width": 640, "height": 480}])
            else:
                paragraphs.append([{"tag": "text", "text": block, "style": []}])
        message_id = self.emulator.add_message(chat_id, images)
        content = {"title": title, "content": paragraphs}
        return self._receive(message_id, chat_id, chat_type, "post", content, sender_type, ())

    def file(self, chat_id: str, data: bytes, name: str, *, chat_type: str = "group") -> dict:
        """A file message (a picture kept sharp, a PDF), as Feishu sends it: file_key and file_name."""
        key = f"file_v3_{uuid.uuid4().hex}"
        message_id = self.emulator.add_message(chat_id, {}, files={key: data})
        return self._receive(message_id, chat_id, chat_type, "file", {"file_key": key, "file_name": name}, "user", ())

    def text(self, chat_id: str, text: str, *, mentions: tuple[str, ...] = (), chat_type: str = "group", parent_id: str = "") -> dict:
        """A text message; each open_id in `mentions` is written into the text as Feishu does, `@_user_N`;
        `parent_id`: the message it replies to."""
        message_id = self.emulator.add_message(chat_id, {})
        return self._receive(message_id, chat_id, chat_type, "text", {"text": text}, "user", mentions, parent_id=parent_id)

    def v1_image(self, chat_id: str, data: bytes, *, chat_type: str = "group", is_mention: bool = False) -> dict:
        key = _image_key()
        message_id = self.emulator.add_message(chat_id, {key: data})
        return self._v1(message_id, chat_id, chat_type, {"msg_type": "image", "image_key": key, "image_width": "640", "image_height": "480"}, is_mention)

    def v1_post(self, chat_id: str, text: str, images: list[bytes], *, title: str = "") -> dict:
        keys = {_image_key(): data for data in images}
        message_id = self.emulator.add_message(chat_id, keys)
        fields = {"msg_type": "post", "title": title, "text": text, "text_without_at_bot": text, "image_keys": list(keys)}
        return self._v1(message_id, chat_id, "group", fields, False)

    def url_verification(self, challenge: str = "") -> dict:
        return {"challenge": challenge or uuid.uuid4().hex, "token": self.app.verification_token, "type": "url_verification"}

    def other(self, event_type: str = "im.chat.member.bot.added_v1") -> dict:
        return {"schema": "2.0", "header": self._header(event_type), "event": {"chat_id": f"oc_{uuid.uuid4().hex}"}}

    def seal(self, payload: dict, *, encrypt: bool = True, timestamp: str | None = None, nonce: str | None = None) -> tuple[dict[str, str], bytes]:
        """The request Feishu would make: encrypted and signed when the app has an Encrypt Key."""
        plain = json.dumps(payload, ensure_ascii=False).encode()
        body = json.dumps({"encrypt": self.cipher.encrypt(plain)}).encode() if self.cipher and encrypt else plain
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Go-http-client/1.1"}
        if self.app.encrypt_key:
            timestamp = timestamp or str(int(time.time()))
            nonce = nonce or secrets.token_hex(8)
            headers.update({
                "X-Lark-Request-Timestamp": timestamp,
                "X-Lark-Request-Nonce": nonce,
                "X-Lark-Signature": signature(timestamp, nonce, self.app.encrypt_key, body),
            })
        return headers, body

    def deliver(self, url: str, payload: dict, **seal: Any) -> httpx.Response:
        headers, body = self.seal(payload, **seal)
        return httpx.post(url, content=body, headers=headers, timeout=10)

    def _header(self, event_type: str) -> dict:
        return {
            "event_id": uuid.uuid4().hex,
            "token": self.app.verification_token,
            "create_time": str(int(time.time() * 1000)),
            "event_type": event_type,
            "tenant_key": "tenant-emulated",
            "app_id": self.app.app_id,
        }

    def _receive(
        self, message_id: str, chat_id: str, chat_type: str, message_type: str, content: dict, sender_type: str,
        mentions: tuple[str, ...], *, parent_id: str = "",
    ) -> dict:  # fmt: skip
        now = str(int(time.time() * 1000))
        self.emulator.describe_message(message_id, message_type, json.dumps(content, ensure_ascii=False), "ou_sender", now)
        return {
            "schema": "2.0",
            "header": self._header("im.message.receive_v1"),
            "event": {
                "sender": {
                    "sender_id": {"union_id": f"on_{uuid.uuid4().hex}", "user_id": "u123", "open_id": "ou_sender"},
                    "sender_type": sender_type,
                    "tenant_key": "tenant-emulated",
                },
                "message": {
                    "message_id": message_id,
                    "root_id": parent_id,
                    "parent_id": parent_id,
                    "create_time": now,
                    "update_time": now,
                    "chat_id": chat_id,
                    "chat_type": chat_type,
                    "message_type": message_type,
                    "content": json.dumps(content, ensure_ascii=False),
                    "mentions": [
                        {"key": f"@_user_{i + 1}", "id": {"union_id": "", "user_id": "", "open_id": open_id}, "name": "OCR", "tenant_key": "tenant-emulated"}
                        for i, open_id in enumerate(mentions)
                    ],
                    "user_agent": "Mozilla/5.0 Lark/7.0",
                },
            },
        }

    def _v1(self, message_id: str, chat_id: str, chat_type: str, fields: dict, is_mention: bool) -> dict:
        return {
            "uuid": uuid.uuid4().hex,
            "token": self.app.verification_token,
            "ts": f"{time.time():.3f}",
            "type": "event_callback",
            "event": {
                "type": "message",
                "app_id": self.app.app_id,
                "tenant_key": "tenant-emulated",
                "root_id": "",
                "parent_id": "",
                "open_chat_id": chat_id,
                "chat_type": "private" if chat_type == "p2p" else chat_type,
                "open_id": "ou_sender",
                "open_message_id": message_id,
                "is_mention": is_mention,
                **fields,
            },
        }


def _image_key() -> str:
    return f"img_v3_{uuid.uuid4().hex}"


def chat_id() -> str:
    return f"oc_{uuid.uuid4().hex}"
