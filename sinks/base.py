"""The sink contract, the registry of URL schemes, and how a sink name becomes a configured sink."""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import ClassVar, Protocol
from urllib.parse import SplitResult, urlsplit

import redis

from ocr_core.errors import PermanentError, TransientError
from ocr_core.job import OcrResult
from ocr_core.store import links_of
from ocrhub.settings import Settings, mask_url

log = logging.getLogger(__name__)


class SinkError(TransientError):
    """Delivery failed but may succeed later: the delivery job is retried with backoff."""


class SinkConfigError(PermanentError):
    """The sink cannot work as configured; the message names what to fix."""


@dataclass(frozen=True)
class SinkContext:
    """What every sink may use: settings, and Redis for shared budgets and idempotency keys."""

    settings: Settings
    conn: redis.Redis


class Sink(Protocol):
    scheme: ClassVar[str]
    needs_image: ClassVar[bool]

    @classmethod
    def from_url(cls, url: SplitResult, context: SinkContext) -> Sink: ...

    def check(self) -> None:
        """Fail fast with a SinkConfigError when the configuration cannot work."""

    def deliver(self, result: OcrResult, image: bytes | None) -> str:
        """Deliver idempotently (a retry must not duplicate) and say where it went."""

    def url(self, privacy: bool = True) -> str: ...


class Amends(Protocol):
    """Optional, beside Sink: a sink that shows where the others delivered (the Feishu card's Notion
    link) is called after every delivery of a job it has delivered, to bring what it posted up to date."""

    def amend(self, result: OcrResult) -> None: ...


SCHEMES: dict[str, str] = {
    "local": "sinks.local:LocalSink",
    "feishu-reply": "sinks.feishu_reply:FeishuReplySink",
    "notion": "sinks.notion:NotionSink",
}

# Sinks whose receipts link a place the team browses (a Notion row): only these links are shown in
# a chat. Another sink's receipt may hold a URL that must stay private (a webhook's, say).
LINKS_SHOWN_IN_CHAT = frozenset({"notion"})

# Sink names usable in routes without configuring anything.
BUILTIN_SINKS: dict[str, str] = {
    "local": "local://",
    "feishu-reply": "feishu-reply://",
}


def sink_class(scheme: str) -> type[Sink]:
    path = SCHEMES.get(scheme)
    if path is None:
        raise SinkConfigError(f"unknown sink scheme {scheme!r}://: use one of {', '.join(s + '://' for s in sorted(SCHEMES))}")
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def sink_url_for(name: str, settings: Settings) -> str:
    if name in settings.sinks:
        return settings.sinks[name]
    if name in BUILTIN_SINKS:
        return BUILTIN_SINKS[name]
    if "://" in name:
        return name
    raise SinkConfigError(f"no sink named {name!r}: define it in OCRHUB_SINKS (known: {sorted(set(settings.sinks) | set(BUILTIN_SINKS))})")


def chat_links(receipts_by_sink: dict[str, str], settings: Settings) -> list[str]:
    """The links of a job's receipts fit to show in its chat, by sink name, each once."""
    shown = []
    for name, link in links_of(receipts_by_sink):
        try:
            scheme = urlsplit(sink_url_for(name, settings)).scheme
        except SinkConfigError:
            continue  # a sink since removed: nothing says its link may be shown
        if scheme in LINKS_SHOWN_IN_CHAT and link not in shown:
            shown.append(link)
    return shown


def sink_from_url(url: str, context: SinkContext) -> Sink:
    parts = urlsplit(url)
    return sink_class(parts.scheme).from_url(parts, context)


_cache: dict[tuple[str, int], Sink] = {}
_cache_lock = threading.Lock()


def get_sink(name: str, context: SinkContext) -> Sink:
    """A configured sink, built once per process and per URL (clients and connections are reused)."""
    url = sink_url_for(name, context.settings)
    key = (url, id(context.conn))
    with _cache_lock:
        sink = _cache.get(key)
        if sink is None:
            sink = sink_from_url(url, context)
            _cache[key] = sink
        return sink


def mask(parts: SplitResult) -> str:
    """The URL as written, with credentials and secret-looking options replaced: safe for logs and pages."""
    return mask_url(parts.geturl())


def routed_sink_names(settings: Settings) -> list[str]:
    """Every sink a result may be sent to: the configured ones and those named in routes."""
    names = dict.fromkeys(settings.sinks)
    for sinks in settings.routes.values():
        names.update(dict.fromkeys(sinks))
    return list(names)


def check_sinks(context: SinkContext) -> list[str]:
    """Problems an admin must fix before any job fails, one line per sink; transient trouble is not one."""
    problems = []
    for name in routed_sink_names(context.settings):
        try:
            get_sink(name, context).check()
        except PermanentError as exc:
            problems.append(f"sink {name!r}: {exc}")
        except TransientError as exc:
            log.warning("sink %r could not be checked now (%s); deliveries will retry", name, exc)
    return problems
