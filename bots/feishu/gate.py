"""The gate every webhook request passes: signature, replay window, decryption, Verification Token.

Done here rather than by lark-oapi's EventDispatcherHandler, which reads the X-Lark-* headers
case-sensitively, accepts unsigned requests when the headers are missing, and turns every
failure into a 500 that Feishu keeps re-sending for hours.

A request is genuine when it passes every check its bot has (signature with an Encrypt Key,
token with a Verification Token). Only a genuine request's event may be `Unreadable` and
acknowledged: Feishu would re-send the same bytes however often it is refused. Anything else is
`Refused`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bots.feishu.bots import FeishuBot
from bots.feishu.crypto import Cipher, signature_matches, token_matches
from bots.feishu.events import Event, MalformedEvent, UrlVerification, parse_event, token_of

TIMESTAMP = "x-lark-request-timestamp"
NONCE = "x-lark-request-nonce"
SIGNATURE = "x-lark-signature"
# Whole seconds since 1970, as Feishu sends them. float() would also take "nan", "inf" and
# "1e999", and NaN compares false with any window.
TIMESTAMP_FORMAT = re.compile(r"[0-9]{1,12}")


class Refused(Exception):
    """The request is not a genuine, fresh Feishu event: answer `status` and enqueue nothing.

    `reason` is for people; `code` is one of a few fixed words, for metrics.
    """

    def __init__(self, status: int, reason: str, code: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Unreadable:
    """A genuine request whose event cannot be read (a field missing or of the wrong type)."""

    reason: str


class Gate:
    def __init__(self, bot: FeishuBot, replay_window: int, clock: Callable[[], float] = time.time) -> None:
        self.bot = bot
        self.replay_window = replay_window
        self.clock = clock
        self.cipher = Cipher(bot.encrypt_key) if bot.encrypt_key else None

    def open(self, headers: Mapping[str, str], body: bytes) -> Event | Unreadable:
        """`headers` must be case-insensitive (Starlette's are); raises Refused."""
        signed = self._check_signature(headers, body)
        outer = _load(body, "the body")
        if not isinstance(outer, dict):
            raise Refused(400, "the body is not a JSON object", "not_json")
        data = self._decrypt(outer)
        if self.bot.verification_token and not token_matches(token_of(data), self.bot.verification_token):
            raise Refused(401, "wrong Verification Token", "bad_token")
        try:
            event: Event | Unreadable = parse_event(data)
        except MalformedEvent as exc:
            event = Unreadable(str(exc))
        if self.cipher is not None and not signed and not isinstance(event, UrlVerification):
            # Only the URL check may arrive unsigned; everything else must prove it knows the key.
            raise Refused(401, "missing X-Lark-Signature headers", "unsigned")
        return event

    def _check_signature(self, headers: Mapping[str, str], body: bytes) -> bool:
        if self.cipher is None:
            return False
        timestamp, nonce, given = headers.get(TIMESTAMP), headers.get(NONCE), headers.get(SIGNATURE)
        if timestamp is None and nonce is None and given is None:
            return False
        if timestamp is None or nonce is None or given is None:
            raise Refused(401, "incomplete X-Lark-* signature headers", "unsigned")
        if not signature_matches(given, timestamp, nonce, self.bot.encrypt_key, body):
            raise Refused(401, "signature does not match", "bad_signature")
        if not TIMESTAMP_FORMAT.fullmatch(timestamp):
            raise Refused(401, "X-Lark-Request-Timestamp is not whole seconds since 1970", "replay")
        age = self.clock() - int(timestamp)
        if self.replay_window and abs(age) > self.replay_window:
            raise Refused(401, f"stale request: timestamp is {age:.0f} s from now (window {self.replay_window} s)", "replay")
        return True

    def _decrypt(self, outer: dict) -> object:
        encrypted = outer.get("encrypt")
        if encrypted is None:
            return outer
        if self.cipher is None:
            raise Refused(400, f"encrypted event, but no Encrypt Key is configured for this bot ({self.bot.setting})", "no_key")
        if not isinstance(encrypted, str):
            raise Refused(400, "'encrypt' is not a string", "undecryptable")
        try:
            plaintext = self.cipher.decrypt(encrypted)
        except ValueError:
            # Wrong key, truncated ciphertext, bad padding: all look alike, by design.
            raise Refused(400, "cannot decrypt the event with this bot's Encrypt Key", "undecryptable") from None
        return _load(plaintext, "the decrypted event")


def _load(raw: bytes, what: str) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        raise Refused(400, f"{what} is not JSON", "not_json") from None
    except RecursionError:
        # A few KB of brackets reach Python's nesting limit; Feishu's events are a few levels deep.
        raise Refused(400, f"{what} is nested too deep", "not_json") from None
