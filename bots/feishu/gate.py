"""The gate every webhook request passes: signature, replay window, decryption, Verification Token.

Done here rather than by lark-oapi's EventDispatcherHandler, which reads the X-Lark-* headers
case-sensitively, accepts unsigned requests when the headers are missing, and turns every
failure into a 500 that Feishu keeps re-sending for hours.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping

from bots.feishu.bots import FeishuBot
from bots.feishu.crypto import Cipher, signature_matches, token_matches
from bots.feishu.events import Event, MalformedEvent, UrlVerification, parse_event

TIMESTAMP = "x-lark-request-timestamp"
NONCE = "x-lark-request-nonce"
SIGNATURE = "x-lark-signature"


class Refused(Exception):
    """The request is not a genuine, fresh Feishu event: answer `status` and enqueue nothing."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Gate:
    def __init__(self, bot: FeishuBot, replay_window: int, clock: Callable[[], float] = time.time) -> None:
        self.bot = bot
        self.replay_window = replay_window
        self.clock = clock
        self.cipher = Cipher(bot.encrypt_key) if bot.encrypt_key else None

    def open(self, headers: Mapping[str, str], body: bytes) -> Event:
        """`headers` must be case-insensitive (Starlette's are); raises Refused."""
        signed = self._check_signature(headers, body)
        try:
            outer = json.loads(body)
        except ValueError:
            raise Refused(400, "the body is not JSON") from None
        if not isinstance(outer, dict):
            raise Refused(400, "the body is not a JSON object")
        data = self._decrypt(outer)
        try:
            event = parse_event(data)
        except MalformedEvent as exc:
            raise Refused(400, f"not a Feishu event: {exc}") from None
        if self.cipher is not None and not signed and not isinstance(event, UrlVerification):
            # Only the URL check may arrive unsigned; everything else must prove it knows the key.
            raise Refused(401, "missing X-Lark-Signature headers")
        if self.bot.verification_token and not token_matches(event.token, self.bot.verification_token):
            raise Refused(401, "wrong Verification Token")
        return event

    def _check_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        if self.cipher is None:
            return False
        timestamp, nonce, given = headers.get(TIMESTAMP), headers.get(NONCE), headers.get(SIGNATURE)
        if timestamp is None and nonce is None and given is None:
            return False
        if timestamp is None or nonce is None or given is None:
            raise Refused(401, "incomplete X-Lark-* signature headers")
        if not signature_matches(given, timestamp, nonce, self.bot.encrypt_key, body):
            raise Refused(401, "signature does not match")
        if self.replay_window:
            try:
                age = self.clock() - float(timestamp)
            except ValueError:
                raise Refused(401, "X-Lark-Request-Timestamp is not a number") from None
            if abs(age) > self.replay_window:
                raise Refused(401, f"stale request: timestamp is {age:.0f} s from now (window {self.replay_window} s)")
        return True

    def _decrypt(self, outer: dict) -> object:
        encrypted = outer.get("encrypt")
        if encrypted is None:
            return outer
        if self.cipher is None:
            raise Refused(400, f"encrypted event, but no Encrypt Key is configured for this bot ({self.bot.setting})")
        if not isinstance(encrypted, str):
            raise Refused(400, "'encrypt' is not a string")
        try:
            plaintext = self.cipher.decrypt(encrypted)
            return json.loads(plaintext)
        except ValueError:
            # Wrong key, truncated ciphertext, bad padding or garbage inside: all look alike, by design.
            raise Refused(400, "cannot decrypt the event with this bot's Encrypt Key") from None
