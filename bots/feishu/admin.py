"""The admin page's Feishu bots: list, add, edit, disable, remove, test. Secrets are write-only.

A bot saved here is stored in Redis (secrets sealed) and served by the running hub within a second:
its webhook, the workers' downloads and replies. A bot from the settings shows here too and may be
edited (the stored copy then wins) or removed (hidden until the stored record is deleted again).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import redis
from fastapi import APIRouter, HTTPException, Path, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from bots.feishu.bots import (
    BOT_ID,
    KIND,
    SECRET_FIELDS,
    WEBHOOK,
    BotConfigError,
    FeishuBot,
    bot_from_record,
    registry,
)
from ocrhub.settings import Settings

log = logging.getLogger("ocrhub.admin")

# What to grant in the Feishu developer console (docs/feishu.md says why each is needed).
SCOPES = ("im:message", "im:message.group_msg", "im:message.group_at_msg", "im:message.p2p_msg")
EVENTS = ("im.message.receive_v1",)
BotId = Path(pattern=BOT_ID.pattern, description="Letters, digits, '-' and '_'; 'default' is the bot of OCRHUB_FEISHU_*.")


class BotForm(BaseModel):
    """A bot as the page sends it. An empty secret keeps the one stored; `clear` empties named secrets."""

    model_config = {"extra": "forbid"}

    app_id: str = Field(max_length=128)
    app_secret: str = Field("", max_length=512)
    encrypt_key: str = Field("", max_length=512)
    verification_token: str = Field("", max_length=512)
    domain: str = Field("https://open.feishu.cn", max_length=256)
    group_policy: Literal["all", "mention"] = "all"
    bot_open_id: str = Field("", max_length=128)
    reply_in_thread: bool = False
    mode: Literal["webhook", "long-connection"] = "webhook"
    language: Literal["zh", "en"] = "en"
    allow_unverified: bool = False
    enabled: bool = True
    clear: list[Literal["encrypt_key", "verification_token"]] = Field(default_factory=list)


def build_admin_router(settings: Settings, conn: redis.Redis) -> APIRouter:
    bots = registry(settings, conn)
    router = APIRouter(prefix="/admin/api/feishu/bots", tags=["admin"])

    def view(bot_id: str, source: str, record: dict[str, Any], request: Request) -> dict[str, Any]:
        mode = record.get("mode") or WEBHOOK
        path = "/feishu/events" if bot_id == "default" else f"/feishu/{bot_id}/events"
        base = (settings.public_url or str(request.base_url)).rstrip("/")
        return {
            "id": bot_id,
            "source": source,
            "enabled": bool(record.get("enabled", True)),
            "app_id": record.get("app_id", ""),
            # Write-only: whether each secret is set, never any part of it.
            "secrets": {name: bool(record.get(name)) for name in SECRET_FIELDS},
            "domain": record.get("domain") or "https://open.feishu.cn",
            "group_policy": record.get("group_policy") or "all",
            "bot_open_id": record.get("bot_open_id", ""),
            "reply_in_thread": bool(record.get("reply_in_thread", False)),
            "mode": mode,
            "language": record.get("language") or "en",
            "allow_unverified": bool(record.get("allow_unverified", False)),
            "webhook_url": base + path if mode == WEBHOOK else "",
            "scopes": list(SCOPES),
            "events": list(EVENTS),
        }

    def who(request: Request) -> str:
        return f"admin@{request.state.admin.address}"

    @router.get("")
    def list_bots(request: Request) -> dict[str, Any]:
        """Every Feishu bot, enabled or not, with its webhook URL and what to grant it in Feishu."""
        return {"bots": [view(bot_id, source, record, request) for bot_id, (source, record) in sorted(bots.records().items())]}

    @router.put("/{bot_id}")
    def save_bot(form: BotForm, request: Request, bot_id: str = BotId) -> dict[str, Any]:
        """Add or edit a bot; it is served within a second, without a restart."""
        existing = bots.records().get(bot_id)
        previous = existing[1] if existing else {}
        record = form.model_dump(exclude={"clear"})
        for name in SECRET_FIELDS:
            if not record[name] and name not in form.clear:
                record[name] = previous.get(name, "")
        try:
            bot = bot_from_record(bot_id, record)
            if form.enabled:
                bot.check_webhook()
        except BotConfigError as exc:
            raise HTTPException(422, _for_the_page(str(exc))) from None
        bots.store.put(KIND, bot_id, record, secrets=SECRET_FIELDS, who=who(request), action="edit" if existing else "add")
        log.info("feishu bot %s %s by %s", bot_id, "edited" if existing else "added", who(request))
        return view(bot_id, "admin", record, request)

    @router.delete("/{bot_id}")
    def remove_bot(request: Request, bot_id: str = BotId) -> dict[str, Any]:
        """Remove a bot; its webhook answers 404 within a second."""
        existing = bots.records().get(bot_id)
        if existing is None:
            raise HTTPException(404, f"no Feishu bot {bot_id!r}")
        if existing[0] == "settings" or bot_id in _settings_bots(settings):
            bots.store.put(KIND, bot_id, {"removed": True}, who=who(request), action="remove")  # else it would come back from the settings
        else:
            bots.store.remove(KIND, bot_id, who=who(request))
        return {"removed": bot_id}

    @router.post("/{bot_id}/test")
    async def test_bot(request: Request, bot_id: str = BotId) -> dict[str, Any]:
        """Ask Feishu for a tenant token with the bot's App ID and Secret, and report its answer."""
        existing = bots.records().get(bot_id)
        if existing is None:
            raise HTTPException(404, f"no Feishu bot {bot_id!r}")
        try:
            bot = bot_from_record(bot_id, existing[1])
        except BotConfigError as exc:
            return {"ok": False, "answer": _for_the_page(str(exc))}
        return await run_in_threadpool(_ask_feishu, bot, conn)

    return router


def _ask_feishu(bot: FeishuBot, conn: redis.Redis) -> dict[str, Any]:
    from bots.feishu.api import FeishuApi

    try:
        expire = FeishuApi(bot, conn, timeout=10.0, rate_retries=0).check_credentials()
    except Exception as exc:  # noqa: BLE001 - whatever Feishu (or the network) said is the answer to show
        return {"ok": False, "answer": str(exc)}
    return {"ok": True, "answer": f"Feishu issued a tenant access token for app {bot.app_id} (valid {expire} s)"}


def _settings_bots(settings: Settings) -> set[str]:
    from bots.feishu.bots import load_bots

    return set(load_bots(settings))


def _for_the_page(message: str) -> str:
    # Messages written for the settings name environment variables; on the page the fields are named.
    return message.replace(" (OCRHUB_FEISHU_*)", "").replace("OCRHUB_FEISHU_BOTS", "the bot's settings")
