"""The Feishu event webhook: POST /feishu/events for the default bot, POST /feishu/{bot_id}/events for others.

Answers in milliseconds: verify, decrypt, parse, then claim and queue in one Redis transaction shared
by the requests that arrive together (batching.py, intake.py), sent over an asyncio connection so
the event loop keeps reading requests meanwhile. Feishu is never called here and nothing is read by
OCR; anything this hub does not act on still gets a 200, because any other answer makes Feishu
re-send for hours.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import redis
import redis.asyncio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bots.feishu.batching import Batcher
from bots.feishu.bots import DEFAULT_BOT, FeishuBot, load_bots
from bots.feishu.events import MessageEvent, UrlVerification
from bots.feishu.gate import Gate, Refused
from bots.feishu.intake import Intake, Outcome
from ocrhub.settings import Settings

# Real events are a few KB; a larger body is not from Feishu.
MAX_BODY = 1 << 20

log = logging.getLogger("ocrhub.feishu")


class Receiver:
    """One bot's webhook endpoint, transport aside: headers and body in, status and JSON out."""

    def __init__(self, bot: FeishuBot, settings: Settings, conn: redis.Redis, aconn: redis.asyncio.Redis) -> None:
        self.bot = bot
        self.gate = Gate(bot, settings.feishu_replay_window)
        self.intake = Intake(bot, settings, conn)
        self.batcher: Batcher[MessageEvent, Outcome] = Batcher(lambda events: self.intake.atake_all(events, aconn))

    async def receive(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict]:
        try:
            event = self.gate.open(headers, body)
        except Refused as exc:
            log.warning("feishu bot %s refused a webhook request (%d): %s", self.bot.bot_id, exc.status, exc.reason)
            return exc.status, {"msg": exc.reason}
        if isinstance(event, UrlVerification):
            return 200, {"challenge": event.challenge}
        if isinstance(event, MessageEvent):
            try:
                outcome = await self.batcher.submit(event)
            except redis.RedisError as exc:
                # Nothing was claimed: Feishu's re-send will be taken once Redis is back.
                log.error("feishu bot %s could not queue message %s: %s", self.bot.bot_id, event.message_id, exc)
                return 503, {"msg": "the queue is unavailable; retry later"}
            return 200, {"msg": "success", "status": outcome.status}
        log.debug("feishu bot %s ignores event %s", self.bot.bot_id, event.event_type)
        return 200, {"msg": "success", "status": "ignored"}


def async_twin(conn: redis.Redis) -> redis.asyncio.Redis:
    """An asyncio client to the same Redis as `conn`: the event loop never waits on a socket."""
    kwargs = conn.connection_pool.connection_kwargs
    common = {k: kwargs[k] for k in ("db", "username", "password", "socket_timeout", "socket_connect_timeout") if kwargs.get(k) is not None}
    if "path" in kwargs:
        return redis.asyncio.Redis(unix_socket_path=kwargs["path"], **common)
    ssl = issubclass(conn.connection_pool.connection_class, redis.SSLConnection)
    return redis.asyncio.Redis(host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379), ssl=ssl, **common)


def build_router(settings: Settings, conn: redis.Redis) -> APIRouter:
    """Raises BotConfigError (a ValueError) when a configured bot cannot safely take webhooks."""
    bots = load_bots(settings)
    for bot in bots.values():
        bot.check_webhook()
    aconn = async_twin(conn)
    receivers = {bot_id: Receiver(bot, settings, conn, aconn) for bot_id, bot in bots.items()}

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        yield
        await aconn.aclose()

    router = APIRouter(tags=["feishu"], lifespan=lifespan)

    async def events(request: Request) -> JSONResponse:
        bot_id = request.path_params.get("bot_id", DEFAULT_BOT)
        receiver = receivers.get(bot_id)
        if receiver is None:
            known = ", ".join(b.webhook_path for b in bots.values()) or "none: set OCRHUB_FEISHU_APP_ID"
            return JSONResponse({"msg": f"no Feishu bot {bot_id!r} here (webhooks: {known})"}, status_code=404)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            return JSONResponse({"msg": f"body over {MAX_BODY} bytes"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"msg": f"body over {MAX_BODY} bytes"}, status_code=413)
        status, payload = await receiver.receive(request.headers, body)
        return JSONResponse(payload, status_code=status)

    # Plain Starlette routes: FastAPI's parameter machinery costs about a tenth of a millisecond a
    # request (bench/ingest.py), and this endpoint reads nothing but the raw body and headers.
    router.add_route("/feishu/events", events, methods=["POST"])
    router.add_route("/feishu/{bot_id}/events", events, methods=["POST"])
    return router
