"""Every Notion request goes through here: the shared budget, Retry-After, and what each failure means.

notion-client's own retries are off so that one policy decides: a read is retried in place; a
write is retried in place only after a 429 (Notion did nothing); after a timeout, a 5xx or a 529
a write raises `Ambiguous` and the caller looks before writing again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import redis
from notion_client import Client
from notion_client.errors import HTTPResponseError, RequestTimeoutError

from ocr_core.limits import LimitExceeded
from ocr_core.limits.budget import Budget, RedisBudget
from sinks.base import SinkConfigError, SinkError

NOTION_VERSION = "2025-09-03"
INTEGRATIONS_PAGE = "https://www.notion.so/profile/integrations"
BUDGET_PREFIX = "ocrhub:notion:budget"


class Ambiguous(SinkError):
    """A write may or may not have taken effect (timeout, 5xx, 529): look before writing again."""


class NotionAuthError(SinkConfigError):
    """Notion refused the token."""


class NotionNotFound(SinkConfigError):
    """Notion cannot see the object: wrong id, or not shared with the integration."""


class NotionRejected(SinkConfigError):
    """Notion refused the request as malformed (validation_error and other 4xx)."""


def shared_budget(conn: redis.Redis, token: str, per_second: float) -> RedisBudget:
    """The one budget every worker shares for this integration token."""
    return RedisBudget(conn, BUDGET_PREFIX, token, per_second)


def make_client(token: str, base_url: str, timeout: float) -> Client:
    return Client(
        auth=token,
        base_url=base_url.rstrip("/"),
        timeout_ms=int(timeout * 1000),
        notion_version=NOTION_VERSION,
        retry=False,
        logger=logging.getLogger("sinks.notion.http"),
        log_level=logging.ERROR,
    )


class NotionApi:
    def __init__(self, client: Client, budget: Budget, *, attempts: int = 5, max_retry_after: float = 60.0) -> None:
        self.client = client
        self.budget = budget
        self.attempts = attempts
        self.max_retry_after = max_retry_after

    def read(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A request without side effects: retried here through every transient failure."""
        return self._send(what, call, args, kwargs, safe=True)

    def write(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A request with side effects: `Ambiguous` when Notion may have applied it without saying so."""
        return self._send(what, call, args, kwargs, safe=False)

    def _send(self, what: str, call: Callable[..., Any], args: tuple, kwargs: dict, *, safe: bool) -> Any:
        last = ""
        for attempt in range(self.attempts):
            self._acquire()
            try:
                return call(*args, **kwargs)
            except HTTPResponseError as exc:
                last = f"{exc.status} {exc.code}: {exc}"
                if self._settle(what, exc, safe):
                    continue
            except RequestTimeoutError:
                last = f"no answer within {self.client.options.timeout_ms / 1000:g} s"
                if not safe:
                    raise Ambiguous(f"Notion {what}: {last}") from None
            except httpx.ConnectError as exc:
                # Nothing reached Notion, so even a write is safe to send again.
                last = f"cannot connect to {self.client.options.base_url} ({exc})"
            except httpx.TransportError as exc:
                last = f"connection lost ({exc.__class__.__name__}: {exc})"
                if not safe:
                    raise Ambiguous(f"Notion {what}: {last}") from None
            time.sleep(min(0.1 * 2**attempt, 5.0))
        raise SinkError(f"Notion {what} kept failing after {self.attempts} attempts; last: {last}")

    def _acquire(self) -> None:
        try:
            self.budget.acquire()
        except LimitExceeded as exc:
            raise SinkError(
                f"the Notion request budget for this integration is booked {exc.wait:.0f} s ahead "
                "(Retry-After from Notion or many workers); the delivery is retried later"
            ) from None

    def _settle(self, what: str, exc: HTTPResponseError, safe: bool) -> bool:
        """Raise when the caller must decide; else retry, at once (True: Retry-After is booked) or after a backoff."""
        status = exc.status
        if status in (429, 529):
            wait = retry_after(exc.headers)
            self.budget.pause(wait)
            if wait > self.max_retry_after:
                raise SinkError(f"Notion {what}: asked to wait {wait:.0f} s ({status}); the delivery is retried later") from None
            if status == 529 and not safe:
                raise Ambiguous(f"Notion {what}: {status} service overloaded") from None
            return True
        if status == 401:
            raise NotionAuthError(
                f"Notion refused the integration token (401 {exc.code}: {exc}): copy the integration's "
                f"Internal Integration Secret again from {INTEGRATIONS_PAGE} into the sink URL or OCRHUB_NOTION_TOKEN"
            ) from None
        if status == 403:
            raise SinkConfigError(
                f"Notion {what} is not allowed (403 {exc.code}: {exc}): give the integration the Read content, "
                f"Insert content and Update content capabilities at {INTEGRATIONS_PAGE}"
            ) from None
        if status == 404:
            raise NotionNotFound(f"Notion {what}: 404 {exc.code}: {exc}") from None
        if status == 409 or status >= 500:
            if status != 409 and not safe:
                raise Ambiguous(f"Notion {what}: {status} {exc.code}: {exc}") from None
            return False
        raise NotionRejected(f"Notion rejected {what} ({status} {exc.code}): {exc}") from None


def retry_after(headers: httpx.Headers, default: float = 1.0) -> float:
    value = headers.get("retry-after", "").strip()
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default
