"""Long-connection mode: lark-oapi's WebSocket client receives a bot's events, so the hub needs no public URL.

Events take the same path as webhook ones from the parsed event on (policy, dedupe, queue). Feishu
authenticates the connection itself with the App ID and Secret, so there is no signature or
token to check per event.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import lark_oapi as lark
import redis

from bots.feishu.bots import FeishuBot
from bots.feishu.events import MessageEvent, parse_event
from bots.feishu.intake import Intake, Outcome
from ocrhub.settings import Settings

log = logging.getLogger("ocrhub.feishu")


class Listener:
    """Plain event JSON in, queued jobs out; raises only when queueing failed (Feishu then re-sends)."""

    def __init__(self, bot: FeishuBot, settings: Settings, conn: redis.Redis) -> None:
        self.bot = bot
        self.intake = Intake(bot, settings, conn)

    def hear(self, payload: bytes) -> Outcome:
        try:
            event = parse_event(json.loads(payload))
        except ValueError as exc:  # MalformedEvent among them
            return self._drop(str(exc))
        except RecursionError:
            return self._drop("the event is nested too deep")
        if not isinstance(event, MessageEvent):
            return Outcome("ignored", reason=f"{getattr(event, 'event_type', 'url_verification')} event")
        return self.intake.take(event)

    def _drop(self, reason: str) -> Outcome:
        # The connection is Feishu's own: what it sent would come again the same, so it is dropped.
        log.warning("feishu bot %s: dropped an event from the long connection: %s", self.bot.bot_id, reason)
        return Outcome("ignored", reason=reason)


class _Dispatcher(lark.EventDispatcherHandler):
    # ws.Client hands every event frame's raw payload to this one method. Overriding it, rather than
    # registering typed handlers, keeps one parser for both modes and answers unknown event types
    # quietly instead of with the SDK's "processor not found" error.
    def __init__(self, listener: Listener) -> None:
        super().__init__()
        self._listener = listener

    def _do_without_validation(self, payload: bytes) -> Any:
        self._listener.hear(payload)
        return None


class RedactQuery(logging.Filter):
    """lark-oapi logs its WebSocket URL, whose query string carries the connection's access key and ticket."""

    QUERY = re.compile(r"\?[^\s\]]+")

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.QUERY.sub("?<redacted>", str(record.msg))
        return True


def build_client(bot: FeishuBot, settings: Settings, conn: redis.Redis) -> lark.ws.Client:
    sdk_log = logging.getLogger("Lark")
    if not any(isinstance(f, RedactQuery) for f in sdk_log.filters):
        sdk_log.addFilter(RedactQuery())
    # The SDK also prints to stdout itself; its records still reach the process's own logging.
    sdk_log.handlers.clear()
    level = lark.LogLevel.DEBUG if settings.log_level == "DEBUG" else lark.LogLevel.INFO
    return lark.ws.Client(
        bot.app_id,
        bot.app_secret,
        event_handler=_Dispatcher(Listener(bot, settings, conn)),
        domain=bot.domain,
        log_level=level,
    )


def run(bot: FeishuBot, settings: Settings, conn: redis.Redis) -> None:
    """Blocks for good: the SDK runs its own event loop and reconnects by itself."""
    build_client(bot, settings, conn).start()
