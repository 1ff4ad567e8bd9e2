"""The HTTP API: health, image upload, job status, search of the local store, queue and failed jobs.

Platform webhooks mount their own routers here; the request path never runs OCR or calls a platform.
Every route needs the API token (`http_guard`) except the webhooks, which verify their own
signatures, the admin page and its API, which need an admin session (`ocrhub.admin`), and the probes (/healthz, /readyz, and /metrics while OCRHUB_METRICS_PUBLIC).
"""

from __future__ import annotations

import functools
import importlib
import logging
from typing import Any

import redis
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from starlette.concurrency import run_in_threadpool

from ocr_core.errors import IntakeFull
from ocr_core.job import ImageJob
from ocr_core.queue import all_queues, submit_bytes
from ocr_core.routes import route_keys, sinks_for
from ocr_core.status import job_state
from ocrhub import __version__
from ocrhub.admin import router as admin_router
from ocrhub.admin.passwords import credential as admin_credential
from ocrhub.auth import api_token, token_file
from ocrhub.http_guard import BearerGate, declare_bearer_security, open_path_matcher
from ocrhub.http_timeouts import BodyDeadline
from ocrhub.live_config import live_config
from ocrhub.settings import Settings, mask_url
from ocrhub.uploads import read_image
from sinks.local import MAX_SEARCH_LIMIT, LocalStore

log = logging.getLogger(__name__)

# Routers of chat platforms, by dotted name: each exposes build_router(settings, conn).
PLATFORM_ROUTERS: tuple[str, ...] = ("bots.feishu.webhook",)
# GET /metrics and GET /readyz, for an operator's tools.
OBSERVE_ROUTER = "ocrhub.observe"
MAX_QUERY_CHARS = 500
MAX_FAILED_LIMIT = 500
# Seconds a refused client should wait: Redis frees memory as workers finish; a restart takes a few seconds.
RETRY_AFTER_FULL_S = 30
RETRY_AFTER_DOWN_S = 5

# The body of POST /api/images as OpenAPI says it, for clients and fuzzers: the route reads it itself.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image: the raw body under any content type, or the first file part of a multipart form.",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}
            },
        },
    }
}


def create_app(settings: Settings, conn: redis.Redis) -> FastAPI:
    app = FastAPI(title="ocrhub", version=__version__)
    open_paths = {"/healthz"}

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        try:
            conn.ping()
        except redis.RedisError as exc:
            raise HTTPException(503, f"redis unreachable: {exc}") from None
        return {"ok": True, "version": __version__}

    @app.post("/api/images", status_code=202, openapi_extra=UPLOAD_BODY)
    async def upload(request: Request, name: str = Query("", max_length=1024, description="A name for a raw-body upload.")) -> dict[str, Any]:
        """Queue one image: the raw body (any content type), or the first file of a multipart form."""
        data, filename = await read_image(request, settings.max_image_bytes, raw_name=name)
        job = await run_in_threadpool(submit_bytes, conn, data, settings, source="api", name=filename)
        return {"job_id": job.job_id, "status_url": str(request.url_for("job", job_id=job.job_id)), **_routing(job, settings, conn)}

    @app.get("/api/jobs/{job_id}", name="job")
    def job_status(job_id: str) -> dict[str, Any]:
        state = job_state(conn, job_id)
        if state.status == "unknown":
            raise HTTPException(404, "no such job")
        body: dict[str, Any] = {"job_id": job_id, "status": state.status, "error": state.error}
        if state.result is not None and state.status == "finished":
            body.update(text=state.result.text, lines=[line.to_dict() for line in state.result.lines], engine=state.result.engine)
        return body

    @functools.cache
    def local_store() -> LocalStore:
        # Opened at the first search, not at start: an API that is never searched creates no store.
        return LocalStore(settings.data_dir / "results.sqlite3")

    @app.get("/api/search")
    def search(
        q: str = Query(max_length=MAX_QUERY_CHARS, description="Words that every result contains, matched as plain text."),
        limit: int = Query(20, ge=1, le=MAX_SEARCH_LIMIT),
    ) -> dict[str, Any]:
        rows = local_store().search(q, limit=limit)
        return {"query": q, "results": [{"job_id": r.job_id, "chat_id": r.chat_id, "sender": r.sender, "sent_at": r.sent_at, "text": r.text} for r in rows]}

    @app.get("/api/queue")
    def queue_status() -> dict[str, Any]:
        return {q.name: _queue_counts(q) for q in all_queues(conn, settings)}

    @app.get("/api/engine")
    def engine_status() -> dict[str, Any]:
        """The OCR engine, and for vLLM each server's limit in force and why it last changed."""
        return engine_report(conn, settings)

    @app.get("/api/failed")
    def failed(limit: int = Query(50, ge=1, le=MAX_FAILED_LIMIT, description="Most jobs listed per queue.")) -> dict[str, Any]:
        jobs = []
        for q in all_queues(conn, settings):
            for job_id in FailedJobRegistry(queue=q).get_job_ids(0, limit - 1):
                entry = _failed_entry(conn, q.name, job_id)
                if entry is not None:
                    jobs.append(entry)
        return {"failed": jobs}

    @app.exception_handler(IntakeFull)
    async def intake_full(request: Request, exc: IntakeFull) -> JSONResponse:
        log.warning("%s %s refused: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_FULL_S)})

    @app.exception_handler(redis.RedisError)
    async def redis_unavailable(request: Request, exc: redis.RedisError) -> JSONResponse:
        # The exception's text may name hosts; the log has it, the client needs only to retry.
        log.warning("%s %s: Redis unavailable: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "the queue is unavailable; retry later"}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_DOWN_S)})

    for module_name in PLATFORM_ROUTERS:
        router = _optional_router(module_name, settings, conn)
        if router is not None:
            open_paths.update(route.path for route in router.routes)  # type: ignore[attr-defined]
            app.include_router(router)
    observe = _optional_router(OBSERVE_ROUTER, settings, conn)
    if observe is not None:
        open_paths.add("/readyz")
        if settings.metrics_public:
            open_paths.add("/metrics")
        app.include_router(observe)

    # The admin page and its API answer to their own session (ocrhub.admin.router), not the token.
    app.include_router(admin_router.build_router(settings, conn, admin_credential(settings)))
    open_paths.update({"/admin", "/admin/{rest:path}"})

    is_open = open_path_matcher(open_paths)
    token = api_token(settings)
    if not token:
        log.warning(
            "no API token: /api and the API docs refuse every request (401). Set OCRHUB_API_TOKEN, "
            "or start the hub with `ocrhub up`, which writes one to %s", token_file(settings),
        )
    # Added innermost first: the gate refuses before any deadline or route runs.
    app.add_middleware(BodyDeadline, seconds=settings.request_timeout)
    app.add_middleware(BearerGate, token=token, is_open=is_open)
    build_schema = app.openapi
    app.openapi = lambda: admin_router.declare_session_security(declare_bearer_security(build_schema(), is_open))  # type: ignore[method-assign]
    return app


def engine_report(conn: redis.Redis, settings: Settings) -> dict[str, Any]:
    """The OCR engine, and for vLLM each server's limit in force and why it last changed (URLs masked)."""
    body: dict[str, Any] = {"engine": settings.ocr_engine}
    if settings.vllm_urls:
        from ocr_core.vllm.servers import report

        servers = report(conn, settings.vllm_urls)
        for server in servers:
            server["url"] = mask_url(server["url"])
        body["vllm"] = {
            "concurrency": settings.vllm_concurrency,
            "bounds": [settings.vllm_min_concurrency, settings.vllm_max_concurrency],
            "fallback": settings.vllm_fallback,
            "servers": servers,
        }
    return body


def _optional_router(module_name: str, settings: Settings, conn: redis.Redis) -> APIRouter | None:
    """The module's build_router(settings, conn), or None when the module is not installed."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None
        raise
    return module.build_router(settings, conn)


def _routing(job: ImageJob, settings: Settings, conn: redis.Redis) -> dict[str, Any]:
    """Where the upload's text will go, and which setting says so."""
    routes = live_config(settings, conn).routes()
    key = next((k for k in route_keys(job) if k in routes), None)
    if key is None:
        why = 'the default for uploads; a route for "upload:*" (on the admin page, or OCRHUB_ROUTES) changes it'
    else:
        why = f"OCRHUB_ROUTES[{key!r}]" if routes[key][0] == "settings" else f"the admin page's route {key!r}"
    return {"sinks": list(sinks_for(job, {k: sinks for k, (_source, sinks) in routes.items()})), "sinks_from": why}


def _failed_entry(conn: redis.Redis, queue: str, job_id: str) -> dict[str, str] | None:
    """One failed job as the admin sees it; None once its record has expired."""
    try:
        rq_job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
        description = rq_job.description or ""
        latest = rq_job.latest_result()
        lines = [line for line in (latest.exc_string or "").strip().splitlines() if line.strip()] if latest else []
    except NoSuchJobError as exc:
        # RQ says the same of an expired record and of one it cannot parse; only the second is listed.
        return _unreadable(queue, job_id, exc) if conn.exists(Job.key_for(job_id)) else None
    except redis.RedisError:
        raise
    except Exception as exc:  # noqa: BLE001 - a record RQ cannot read is still listed, with why
        return _unreadable(queue, job_id, exc)
    return {"id": rq_job.id, "queue": queue, "description": description, "reason": lines[-1] if lines else ""}


def _unreadable(queue: str, job_id: str, exc: Exception) -> dict[str, str]:
    return {"id": job_id, "queue": queue, "description": "", "reason": f"unreadable job record ({type(exc).__name__})"}


def _queue_counts(q) -> dict[str, int]:  # noqa: ANN001
    return {
        "queued": q.count,
        "started": StartedJobRegistry(queue=q).count,
        "scheduled": ScheduledJobRegistry(queue=q).count,
        "failed": FailedJobRegistry(queue=q).count,
    }


def app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory ocrhub.api:app_from_environment` (without `ocrhub serve`'s
    header and body deadlines: prefer `ocrhub serve`)."""
    from ocrhub.runtime import connect
    from ocrhub.settings import get_settings

    settings = get_settings()
    return create_app(settings, connect(settings))
