"""The Feishu event webhook: POST /feishu/events for the default bot, POST /feishu/{bot_id}/events for others.

Answers in milliseconds: verify, decrypt, parse, then claim and queue in one Redis transaction shared
by the requests that arrive together (batching.py, intake.py), sent over an asyncio connection so
the event loop keeps reading requests meanwhile. Feishu is never called here and nothing is read by
OCR.

What Feishu is answered decides what it does next: any answer but 200 makes it re-send (after 15 s,
5 min, 1 h, 6 h). So a genuine event the hub cannot or will not act on gets a 200 and is dropped,
since the same bytes would fail again; a request that is not genuine gets a 4xx; a genuine event
that could not be queued *yet* (Redis away or full) gets a 503, whose re-send will be taken. Never
a 500: whatever fails unexpectedly is one log line and one of those answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from bots.feishu.batching import Batcher
from bots.feishu.bots import DEFAULT_BOT, WEBHOOK, BotConfigError, FeishuBot, load_bots, registry
from bots.feishu.events import MessageEvent, UrlVerification
from bots.feishu.gate import Gate, Refused, Unreadable
from bots.feishu.intake import PLATFORM, Intake, Outcome
from ocr_core.errors import IntakeFull
from ocrhub.metrics import COUNTERS, series
from ocrhub.settings import Settings

# Real events are a few KB; a larger body is not from Feishu.
MAX_BODY = 1 << 20
# Retry-After, in seconds, for senders that honour it (Feishu keeps its own schedule of re-sends):
# Redis frees memory as workers finish; a restarted Redis is back within seconds. As ocrhub.api says.
RETRY_AFTER_FULL, RETRY_AFTER_DOWN = "30", "5"
EVENTS_METRIC = "ocrhub_webhook_events_total"
# intake.ignore_reason words its reasons for people; the metric takes one of a few fixed words.
# Checked in this order; anything else is "other".
IGNORED_BECAUSE = (
    ("sent by a ", "from_bot"),
    ("event for app ", "other_app"),
    ("group message that does not @", "not_mentioned"),
    ("no images", "no_image"),
    ("text that asks the bot nothing", "not_image"),
    ("a file that is neither", "not_image"),
)

log = logging.getLogger("ocrhub.feishu")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    outcome: str  # for the metric: queued, duplicate, ignored or refused
    reason: str = ""  # for the metric: one fixed word
    headers: dict[str, str] = field(default_factory=dict)


def ignored_because(outcome: Outcome) -> str:
    for start, word in IGNORED_BECAUSE:
        if outcome.reason.startswith(start):
            return word
    return "not_image" if outcome.reason.endswith(" message") else "other"


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]


class Tally:
    """Webhook outcomes counted in memory and added to the hub's counters (ocrhub.metrics) by one
    background pipeline of HINCRBYs: a request is answered without waiting for its metric, and
    under load one round trip carries the counts of many requests.
    """

    def __init__(self, aconn: redis.asyncio.Redis) -> None:
        self.aconn = aconn
        self.pending: Counter[str] = Counter()
        self._flushing: asyncio.Task[None] | None = None

    def add(self, bot_id: str, outcome: str, reason: str) -> None:
        labels = {"platform": PLATFORM, "bot": bot_id, "outcome": outcome, "reason": reason}
        self.pending[series(EVENTS_METRIC, labels)] += 1
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self.flush())

    async def flush(self) -> None:
        # Let the answers go out first, and the requests read meanwhile add theirs.
        await asyncio.sleep(0)
        while self.pending:
            counts, self.pending = self.pending, Counter()
            try:
                async with self.aconn.pipeline(transaction=False) as pipe:
                    for key, n in counts.items():
                        pipe.hincrby(COUNTERS, key, n)
                    await pipe.execute()
            except redis.RedisError as exc:
                # Kept for the next flush: few distinct series, so this cannot grow beyond a few lines.
                self.pending.update(counts)
                log.debug("webhook metrics not recorded yet: %s", exc)
                return

    async def close(self) -> None:
        if self._flushing is not None and not self._flushing.done():
            await self._flushing
        await self.flush()


class Receiver:
    """One bot's webhook endpoint, transport aside: headers and body in, an Answer out."""

    def __init__(self, bot: FeishuBot, settings: Settings, conn: redis.Redis, aconn: redis.asyncio.Redis) -> None:
        self.bot = bot
        self.gate = Gate(bot, settings.feishu_replay_window)
        self.intake = Intake(bot, settings, conn)
        self.batcher: Batcher[MessageEvent, Outcome] = Batcher(lambda events: self.intake.atake_all(events, aconn))

    async def receive(self, headers: Mapping[str, str], body: bytes) -> Answer:
        try:
            event = self.gate.open(headers, body)
        except Refused as exc:
            log.warning("feishu bot %s refused a webhook request (%d): %s", self.bot.bot_id, exc.status, exc.reason)
            return Answer(exc.status, {"msg": exc.reason}, "refused", exc.code)
        except Exception as exc:  # noqa: BLE001 - the same bytes would fail the same way: 4xx, not a 500 re-sent for hours
            log.error("feishu bot %s could not read a webhook request: %s", self.bot.bot_id, _one_line(exc))
            log.debug("the failure in full", exc_info=True)
            return Answer(400, {"msg": "unreadable request"}, "refused", "error")
        if isinstance(event, Unreadable):
            log.warning("feishu bot %s acknowledged a malformed event and dropped it: %s", self.bot.bot_id, event.reason)
            return Answer(200, {"msg": "success", "status": "ignored"}, "ignored", "malformed")
        if isinstance(event, UrlVerification):
            return Answer(200, {"challenge": event.challenge}, "ignored", "challenge")
        if isinstance(event, MessageEvent):
            return await self._queue(event)
        log.debug("feishu bot %s ignores event %s", self.bot.bot_id, event.event_type)
        return Answer(200, {"msg": "success", "status": "ignored"}, "ignored", "not_message")

    async def _queue(self, event: MessageEvent) -> Answer:
        # In every failure below nothing was claimed (claim and job share one transaction), so
        # Feishu's re-send will be taken once the hub can queue again.
        try:
            outcome = await self.batcher.submit(event)
        except IntakeFull as exc:
            log.warning("feishu bot %s did not queue message %s: %s", self.bot.bot_id, event.message_id, exc)
            return Answer(503, {"msg": "the queue is full; retry later"}, "refused", "intake_full", {"Retry-After": RETRY_AFTER_FULL})
        except redis.RedisError as exc:
            log.error("feishu bot %s could not queue message %s: %s", self.bot.bot_id, event.message_id, _one_line(exc))
            return Answer(503, {"msg": "the queue is unavailable; retry later"}, "refused", "redis_down", {"Retry-After": RETRY_AFTER_DOWN})
        except Exception as exc:  # noqa: BLE001 - a 503 keeps the event: Feishu re-sends it
            log.error("feishu bot %s could not queue message %s: %s", self.bot.bot_id, event.message_id, _one_line(exc))
            log.debug("the failure in full", exc_info=True)
            return Answer(503, {"msg": "the event could not be queued; retry later"}, "refused", "error", {"Retry-After": RETRY_AFTER_DOWN})
        reason = ignored_because(outcome) if outcome.status == "ignored" else ""
        return Answer(200, {"msg": "success", "status": outcome.status}, outcome.status, reason)


def async_twin(conn: redis.Redis) -> redis.asyncio.Redis:
    """An asyncio client to the same Redis as `conn`: the event loop never waits on a socket."""
    kwargs = conn.connection_pool.connection_kwargs
    common = {k: kwargs[k] for k in ("db", "username", "password", "socket_timeout", "socket_connect_timeout") if kwargs.get(k) is not None}
    if "path" in kwargs:
        return redis.asyncio.Redis(unix_socket_path=kwargs["path"], **common)
    ssl = issubclass(conn.connection_pool.connection_class, redis.SSLConnection)
    return redis.asyncio.Redis(host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379), ssl=ssl, **common)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is known to exceed `limit`: from Content-Length, or while it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def build_router(settings: Settings, conn: redis.Redis) -> APIRouter:
    """Raises BotConfigError (a ValueError) when a bot in webhook mode cannot safely take webhooks."""
    for bot in load_bots(settings).values():
        bot.check_webhook()
    in_force = registry(settings, conn)  # the admin page's bots too, re-read within a second of a change
    aconn = async_twin(conn)
    tally = Tally(aconn)
    receivers: dict[str, Receiver] = {}

    def receiver_for(bot_id: str) -> Receiver | None:
        bot = in_force.bots().get(bot_id)
        if bot is None or bot.mode != WEBHOOK:
            return None
        current = receivers.get(bot_id)
        if current is None or current.bot != bot:
            try:
                bot.check_webhook()
            except BotConfigError as exc:  # refused when saved; a record edited by hand ends here
                log.error("%s", exc)
                return None
            receivers[bot_id] = current = Receiver(bot, settings, conn, aconn)
        return current

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        yield
        await tally.close()
        await aconn.aclose()

    router = APIRouter(tags=["feishu"], lifespan=lifespan)

    def not_here(bot_id: str) -> str:
        bots = in_force.bots()
        bot = bots.get(bot_id)
        if bot is not None:
            return (
                f"Feishu bot {bot_id!r} receives its events over the long connection (`ocrhub feishu-connect`), "
                f"so no webhook is served for it; set {bot.mode_setting(WEBHOOK)} to serve one"
            )
        known = ", ".join(b.webhook_path for b in bots.values() if b.mode == WEBHOOK) or "none: set OCRHUB_FEISHU_APP_ID"
        return f"no Feishu bot {bot_id!r} here (webhooks: {known})"

    async def answer(request: Request, bot_id: str) -> Answer:
        receiver = receiver_for(bot_id)
        if receiver is None:
            return Answer(404, {"msg": not_here(bot_id)}, "refused", "no_webhook" if bot_id in in_force.bots() else "unknown_bot")
        try:
            body = await read_body(request, MAX_BODY)
        except ClientDisconnect:
            return Answer(400, {"msg": "the request ended before its body"}, "refused", "bad_request")
        if body is None:
            return Answer(413, {"msg": f"body over {MAX_BODY} bytes"}, "refused", "too_large")
        return await receiver.receive(request.headers, body)

    async def events(request: Request) -> JSONResponse:
        bot_id = request.path_params.get("bot_id", DEFAULT_BOT)
        try:
            reply = await answer(request, bot_id)
        except Exception as exc:  # noqa: BLE001 - never a 500: Feishu would re-send it for hours
            log.error("feishu webhook for bot %r failed: %s", bot_id, _one_line(exc))
            log.debug("the failure in full", exc_info=True)
            reply = Answer(400, {"msg": "unreadable request"}, "refused", "error")
        # An unknown id comes from the URL: it never becomes a metric label.
        tally.add(bot_id if bot_id in in_force.bots() else "", reply.outcome, reply.reason)
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    # Plain Starlette routes: FastAPI's parameter machinery costs about a tenth of a millisecond a
    # request (bench/ingest.py), and this endpoint reads nothing but the raw body and headers.
    router.add_route("/feishu/events", events, methods=["POST"])
    router.add_route("/feishu/{bot_id}/events", events, methods=["POST"])
    return router
