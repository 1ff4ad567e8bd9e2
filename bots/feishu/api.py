"""The worker's Feishu client: lark-oapi calls with a shared token, one refresh on a refused token,
waits on rate limits, and every response's code checked (Feishu reports many errors with HTTP 200).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import lark_oapi as lark
import redis
import requests
from lark_oapi.api.auth.v3 import InternalTenantAccessTokenRequest, InternalTenantAccessTokenRequestBody
from lark_oapi.api.im.v1 import (
    GetMessageRequest,
    GetMessageResourceRequest,
    PatchMessageRequest,
    PatchMessageRequestBody,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)
from lark_oapi.core.model import BaseResponse, RequestOption

from bots.feishu.bots import FeishuBot
from bots.feishu.tokens import TenantTokens
from ocr_core.errors import PermanentError, TransientError

# The app lacks a scope (or a permission the call needs).
SCOPE_CODES = frozenset({99991672, 99991679, 230027})
# Codes that mean "this token is no good": fetch a new one and try once more.
TOKEN_CODES = frozenset({99991661, 99991663, 99991664, 99991665, 99991668, 99991671, 99991677})
RATE_LIMIT_CODES = frozenset({99991400, 230020})
# Added to Feishu's own message, which every error keeps.
HINTS = {
    234001: "the message or image key is malformed",
    234003: "the image is not part of that message",
    234004: "the bot is not in the chat (add it to the group)",
    234037: "the file is over Feishu's 100 MB download limit",
    234043: "images inside forwarded bundles and cards cannot be downloaded",
    230002: "the bot is not in the chat (add it to the group)",
    230011: "the message was recalled",
    99991672: "the app lacks a scope; grant it under Permissions & Scopes and publish a new version",
    10014: "the App Secret is wrong (OCRHUB_FEISHU_APP_SECRET)",
    10003: "the App ID is wrong or the app is not installed (OCRHUB_FEISHU_APP_ID)",
}
RATE_RESET_HEADER = "x-ogw-ratelimit-reset"
LOG_ID_HEADER = "x-tt-logid"

log = logging.getLogger("ocrhub.feishu")


class FeishuTransientError(TransientError):
    """Feishu could not serve the call now; the job is retried later."""


class FeishuPermanentError(PermanentError):
    """Feishu refused the call for a reason retrying cannot fix; the message says what to change."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class FeishuApi:
    def __init__(
        self,
        bot: FeishuBot,
        conn: redis.Redis,
        *,
        timeout: float = 20.0,
        max_rate_wait: float = 15.0,
        rate_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bot = bot
        self.max_rate_wait = max_rate_wait
        self.rate_retries = rate_retries
        self.sleep = sleep
        # Tokens come from Redis (enable_set_token), never from lark-oapi's process-wide cache.
        self.client = (
            lark.Client.builder()
            .app_id(bot.app_id)
            .app_secret(bot.app_secret)
            .domain(bot.domain)
            .enable_set_token(True)
            .timeout(timeout)
            .log_level(lark.LogLevel.WARNING)
            .build()
        )
        self.tokens = TenantTokens(conn, bot.app_id, bot.domain, self._issue_token, sleep=sleep)

    def download_image(self, message_id: str, image_key: str, resource: str = "image") -> bytes:
        """The bytes of an image (resource "image") or a file ("file") of a message (message_resource.get)."""
        request = GetMessageResourceRequest.builder().message_id(message_id).file_key(image_key).type(resource).build()
        what = f"download {resource} {image_key} of message {message_id}"
        response = self._call(what, lambda option: self.client.im.v1.message_resource.get(request, option))
        return response.file.read()

    def message(self, message_id: str) -> tuple[str, str, str, str]:
        """An earlier message's (msg_type, content JSON, chat_id, sender id), as `message.get` gives them."""
        request = GetMessageRequest.builder().message_id(message_id).build()
        response = self._call(f"get message {message_id}", lambda option: self.client.im.v1.message.get(request, option))
        items = getattr(response.data, "items", None) or []
        if not items:
            raise FeishuPermanentError(f"Feishu returned no message {message_id}")
        item = items[0]
        body = getattr(item, "body", None)
        sender = getattr(getattr(item, "sender", None), "id", "") or ""
        return str(item.msg_type or ""), str(getattr(body, "content", "") or ""), str(item.chat_id or ""), str(sender)

    def reply(self, message_id: str, msg_type: str, content: str, uuid: str, in_thread: bool, pace: Callable[[], None] | None = None) -> str:
        """Post a reply; Feishu posts at most one message per `uuid` within an hour. Returns the reply's message_id.

        `pace` is called right before each attempt goes out (a rate limiter's acquire).
        """
        body = (
            ReplyMessageRequestBody.builder().msg_type(msg_type).content(content).uuid(uuid).reply_in_thread(in_thread).build()
        )
        request = ReplyMessageRequest.builder().message_id(message_id).request_body(body).build()
        response = self._call(f"reply to message {message_id}", lambda option: self.client.im.v1.message.reply(request, option), pace)
        data = getattr(response, "data", None)
        return getattr(data, "message_id", "") or ""

    def update_card(self, message_id: str, content: str, pace: Callable[[], None] | None = None) -> None:
        """Replace a card the bot sent (message.patch); only shared cards (`update_multi`) can be."""
        request = (
            PatchMessageRequest.builder().message_id(message_id).request_body(PatchMessageRequestBody.builder().content(content).build()).build()
        )
        self._call(f"update card {message_id}", lambda option: self.client.im.v1.message.patch(request, option), pace)

    def _call(self, what: str, send: Callable[[RequestOption], BaseResponse], pace: Callable[[], None] | None = None) -> BaseResponse:
        refreshed = False
        rate_waits = 0
        while True:
            token = self.tokens.get()
            option = RequestOption.builder().tenant_access_token(token).build()
            if pace is not None:
                pace()
            try:
                response = send(option)
            except requests.RequestException as exc:
                raise FeishuTransientError(f"Feishu did not answer ({what}) at {self.bot.domain}: {exc}") from exc
            status, code, msg, headers = _outcome(response)
            if code == 0:
                return response
            if code in TOKEN_CODES:
                if refreshed:
                    raise FeishuTransientError(f"Feishu refused a freshly issued token ({what}): code {code} {msg}")
                log.info("feishu bot %s: token refused (code %s); fetching a new one", self.bot.bot_id, code)
                self.tokens.forget(token)
                refreshed = True
                continue
            if status == 429 or code in RATE_LIMIT_CODES:
                wait = _reset_after(headers)
                if rate_waits >= self.rate_retries or wait > self.max_rate_wait:
                    raise FeishuTransientError(f"Feishu rate limit ({what}): code {code}, retry after {wait:g} s")
                log.info("feishu bot %s: rate limited (code %s); waiting %.1f s", self.bot.bot_id, code, wait)
                self.sleep(wait)
                rate_waits += 1
                continue
            raise _error(what, status, code, msg, headers)

    def check_credentials(self) -> int:
        """Ask Feishu for a fresh tenant token (nothing cached): the seconds it is valid for, or the
        FeishuPermanentError / FeishuTransientError that says what Feishu answered."""
        return self._issue_token()[1]

    def _issue_token(self) -> tuple[str, int]:
        body = InternalTenantAccessTokenRequestBody.builder().app_id(self.bot.app_id).app_secret(self.bot.app_secret).build()
        request = InternalTenantAccessTokenRequest.builder().request_body(body).build()
        try:
            response = self.client.auth.v3.tenant_access_token.internal(request)
        except requests.RequestException as exc:
            raise FeishuTransientError(f"Feishu did not answer the token request at {self.bot.domain}: {exc}") from exc
        status, code, msg, headers = _outcome(response)
        payload = _json(response)
        token, expire = payload.get("tenant_access_token"), payload.get("expire")
        if code != 0 or not isinstance(token, str) or not token or not isinstance(expire, int):
            raise _error(f"get a tenant_access_token for app {self.bot.app_id}", status, code, msg, headers)
        return token, expire


def _json(response: BaseResponse) -> dict[str, Any]:
    raw = response.raw
    if raw is None or not raw.content:
        return {}
    try:
        data = json.loads(raw.content)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _outcome(response: BaseResponse) -> tuple[int, int | None, str, dict[str, str]]:
    """HTTP status, business code (None when there is none), message, lower-cased headers."""
    raw = response.raw
    status = raw.status_code if raw is not None else 0
    headers = {k.lower(): v for k, v in (raw.headers or {}).items()} if raw is not None else {}
    code, msg = response.code, response.msg or ""
    if headers.get("content-type", "").startswith("application/json"):
        # lark-oapi calls any 2xx download a success, even a JSON error body.
        payload = _json(response)
        if isinstance(payload.get("code"), int):
            code, msg = payload["code"], str(payload.get("msg") or msg)
    if code is None and 200 <= status < 300:
        code = 0
    return status, code, msg, headers


def _reset_after(headers: dict[str, str]) -> float:
    try:
        return max(0.0, float(headers.get(RATE_RESET_HEADER, "1")))
    except ValueError:
        return 1.0


def _error(what: str, status: int, code: int | None, msg: str, headers: dict[str, str]) -> Exception:
    log_id = headers.get(LOG_ID_HEADER, "")
    detail = f"HTTP {status}" + (f", code {code}" if code is not None else "") + (f": {msg}" if msg else "")
    if log_id:
        detail += f" (log id {log_id})"
    # No code (a gateway page) or a 5xx is Feishu's own trouble; a coded 4xx/200 is an answer about this request.
    if code is None or status >= 500:
        return FeishuTransientError(f"Feishu could not {what}: {detail}")
    hint = HINTS.get(code, "")
    return FeishuPermanentError(f"Feishu refused to {what}: {detail}" + (f"; {hint}" if hint else ""), code)


_apis: dict[tuple[FeishuBot, int], FeishuApi] = {}
_apis_lock = threading.Lock()


def api_for(bot: FeishuBot, conn: redis.Redis) -> FeishuApi:
    """One client per bot and connection in this process, built on first use."""
    key = (bot, id(conn))
    with _apis_lock:
        api = _apis.get(key)
        if api is None:
            api = FeishuApi(bot, conn)
            _apis[key] = api
        return api
