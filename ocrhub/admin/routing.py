"""The admin page's routes and sinks: which sinks get each chat's (or bot's, or platform's) results.

A sink URL is checked with the sink's own check before it is saved (a Notion database missing a
column is named), and shown masked; a route may name only sinks that exist. Both apply to the
running hub within a second (ocrhub.live_config).
"""

from __future__ import annotations

import re
from typing import Any

import redis
from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ocr_core.errors import PermanentError, TransientError
from ocr_core.job import ImageJob
from ocr_core.vllm.prompts import prompt_for
from ocr_core.routes import DEFAULT_ROUTES, FALLBACK_ROUTE, sinks_for
from ocrhub.live_config import ROUTE_KIND, SINK_KIND, SINK_SECRETS, live_config
from ocrhub.settings import Settings, mask_url
from sinks.base import BUILTIN_SINKS, SinkContext, sink_from_url

SINK_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A route key: "*", "platform:*", "platform:bot", "platform:bot:chat", or a bare chat id.
ROUTE_KEY = re.compile(r"^[A-Za-z0-9_*:.@-]{1,200}$")


class SinkForm(BaseModel):
    url: str = Field(min_length=3, max_length=2000, description="e.g. notion://<token>@<database id>, local:///path/file.sqlite3")


class RouteForm(BaseModel):
    key: str = Field(pattern=ROUTE_KEY.pattern, description="'*', 'feishu:*', 'feishu:<bot>', 'feishu:<bot>:<chat id>', 'upload:*', or a chat id")
    sinks: list[str] = Field(min_length=1, max_length=20)
    task: str = Field("", max_length=500, description="OCR task for the vllm engine (text, markdown, table, fields:A,B, translate:en, …); empty: the default")


def build_router(settings: Settings, conn: redis.Redis) -> APIRouter:
    live = live_config(settings, conn)
    router = APIRouter(prefix="/admin/api", tags=["admin"])

    def who(request: Request) -> str:
        return f"admin@{request.state.admin.address}"

    @router.get("/routing")
    def routing() -> dict[str, Any]:
        """Named sinks (URLs masked), routes, the built-in defaults, and where uploads go now."""
        upload = ImageJob(platform="upload", bot_id="api", chat_id="api", message_id="-", image_key="-")
        routes, tasks = live.routes(), live.tasks()
        return {
            "sinks": [{"name": n, "source": src, "url": mask_url(url)} for n, (src, url) in sorted(live.sinks().items())],
            "builtin_sinks": sorted(BUILTIN_SINKS),
            "routes": [{"key": k, "source": src, "sinks": s, "task": tasks.get(k, "")} for k, (src, s) in sorted(routes.items())],
            "default_task": settings.vllm_task,
            "defaults": {**{p: list(s) for p, s in DEFAULT_ROUTES.items()}, "other": list(FALLBACK_ROUTE)},
            "uploads_go_to": list(sinks_for(upload, {k: s for k, (_src, s) in routes.items()})),
        }

    @router.put("/sinks/{name}")
    async def save_sink(form: SinkForm, request: Request, name: str = Path(pattern=SINK_NAME.pattern)) -> dict[str, Any]:
        """Save a named sink after its own check; a sink that cannot work is refused with the reason."""
        if name in BUILTIN_SINKS:
            raise HTTPException(422, f"{name!r} is a built-in sink; choose another name")
        warning = await run_in_threadpool(_check, form.url, settings, conn)
        existing = live.sinks().get(name)
        live.store.put(SINK_KIND, name, {"url": form.url}, secrets=SINK_SECRETS, who=who(request), action="edit" if existing else "add")
        return {"name": name, "url": mask_url(form.url), "warning": warning}

    @router.delete("/sinks/{name}")
    def remove_sink(request: Request, name: str = Path(pattern=SINK_NAME.pattern)) -> dict[str, Any]:
        existing = live.sinks().get(name)
        if existing is None:
            raise HTTPException(404, f"no sink named {name!r}")
        users = sorted(key for key, (_src, sinks) in live.routes().items() if name in sinks)
        if users:
            raise HTTPException(409, f"routes {', '.join(users)} still send to {name!r}: change them first")
        _remove(live, SINK_KIND, name, existing[0], who(request))
        return {"removed": name}

    @router.put("/routes")
    def save_route(form: RouteForm, request: Request) -> dict[str, Any]:
        """Send the results of the chats `key` names to `sinks` (names of sinks that exist)."""
        known = set(live.sinks()) | set(BUILTIN_SINKS)
        unknown = [name for name in form.sinks if name not in known]
        if unknown:
            raise HTTPException(422, f"no sink named {', '.join(map(repr, unknown))}: add it first (known: {', '.join(sorted(known))})")
        if form.task:
            try:
                prompt_for(form.task)
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None
        existing = live.routes().get(form.key)
        record = {"sinks": list(dict.fromkeys(form.sinks)), "task": form.task}
        live.store.put(ROUTE_KIND, form.key, record, who=who(request), action="edit" if existing else "add")
        return {"key": form.key, **record}

    @router.delete("/routes")
    def remove_route(request: Request, key: str = Query(pattern=ROUTE_KEY.pattern)) -> dict[str, Any]:
        existing = live.routes().get(key)
        if existing is None:
            raise HTTPException(404, f"no route {key!r}")
        _remove(live, ROUTE_KIND, key, existing[0], who(request))
        return {"removed": key}

    return router


def _check(url: str, settings: Settings, conn: redis.Redis) -> str:
    """Raise HTTPException 422 when the sink can never work; '' when it checks out, else why it could not be checked now."""
    try:
        sink_from_url(url, SinkContext(settings, conn)).check()
    except PermanentError as exc:
        raise HTTPException(422, str(exc)) from None
    except TransientError as exc:
        return f"saved, but not checked now: {exc}"
    except Exception as exc:  # noqa: BLE001 - a URL that cannot even be parsed is the admin's to fix
        raise HTTPException(422, f"{type(exc).__name__}: {exc}") from None
    return ""


def _remove(live, kind: str, record_id: str, source: str, who: str) -> None:  # noqa: ANN001
    if source == "settings" or record_id in (live.base.sinks if kind == SINK_KIND else live.base.routes):
        live.store.put(kind, record_id, {"removed": True}, who=who, action="remove")  # else it would come back from the settings
    else:
        live.store.remove(kind, record_id, who=who)
