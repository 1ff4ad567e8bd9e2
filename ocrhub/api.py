"""The HTTP API: health, image upload, job status, search of the local store, queue and failed jobs.

Platform webhooks mount their own routers here; the request path never runs OCR or calls a platform.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import redis
from fastapi import FastAPI, HTTPException, Request, UploadFile
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from ocr_core.queue import all_queues, submit_bytes
from ocr_core.status import job_state
from ocrhub import __version__
from ocrhub.settings import Settings

log = logging.getLogger(__name__)

# Routers of chat platforms, by dotted name: each exposes build_router(settings, conn).
PLATFORM_ROUTERS: tuple[str, ...] = ("bots.feishu.webhook",)


def create_app(settings: Settings, conn: redis.Redis) -> FastAPI:
    app = FastAPI(title="ocrhub", version=__version__)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        try:
            conn.ping()
        except redis.RedisError as exc:
            raise HTTPException(503, f"redis unreachable: {exc}") from None
        return {"ok": True, "version": __version__}

    @app.post("/api/images", status_code=202)
    async def upload(request: Request, file: UploadFile | None = None) -> dict[str, Any]:
        """Queue one image: multipart field `file`, or the raw body."""
        if file is not None:
            data, name = await file.read(), file.filename or "image"
        else:
            data, name = await request.body(), request.query_params.get("name", "image")
        if not data:
            raise HTTPException(400, "empty upload: send the image as multipart field 'file' or as the body")
        if len(data) > settings.max_image_bytes:
            raise HTTPException(413, f"image is {len(data)} bytes, over the {settings.max_image_bytes}-byte limit (OCRHUB_MAX_IMAGE_BYTES)")
        job = submit_bytes(conn, data, settings, source="api", name=name)
        return {"job_id": job.job_id, "status_url": f"/api/jobs/{job.job_id}"}

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        state = job_state(conn, job_id)
        if state.status == "unknown":
            raise HTTPException(404, f"no job {job_id}")
        body: dict[str, Any] = {"job_id": job_id, "status": state.status, "error": state.error}
        if state.result is not None and state.status == "finished":
            body.update(text=state.result.text, lines=[line.to_dict() for line in state.result.lines], engine=state.result.engine)
        return body

    @app.get("/api/search")
    def search(q: str, limit: int = 20) -> dict[str, Any]:
        from sinks.local import LocalStore

        rows = LocalStore(settings.data_dir / "results.sqlite3").search(q, limit=min(max(limit, 1), 200))
        return {"query": q, "results": [{"job_id": r.job_id, "chat_id": r.chat_id, "sender": r.sender, "sent_at": r.sent_at, "text": r.text} for r in rows]}

    @app.get("/api/queue")
    def queue_status() -> dict[str, Any]:
        return {q.name: _queue_counts(q) for q in all_queues(conn, settings)}

    @app.get("/api/engine")
    def engine_status() -> dict[str, Any]:
        """The OCR engine, and for vLLM each server's limit in force and why it last changed."""
        body: dict[str, Any] = {"engine": settings.ocr_engine}
        if settings.vllm_urls:
            from ocr_core.vllm.servers import report

            body["vllm"] = {
                "concurrency": settings.vllm_concurrency,
                "bounds": [settings.vllm_min_concurrency, settings.vllm_max_concurrency],
                "fallback": settings.vllm_fallback,
                "servers": report(conn, settings.vllm_urls),
            }
        return body

    @app.get("/api/failed")
    def failed(limit: int = 50) -> dict[str, Any]:
        jobs = []
        for q in all_queues(conn, settings):
            registry = FailedJobRegistry(queue=q)
            for rq_job in Job.fetch_many(registry.get_job_ids(0, limit - 1), connection=conn, serializer=JSONSerializer):
                if rq_job is None:
                    continue
                latest = rq_job.latest_result()
                reason = (latest.exc_string or "").strip().splitlines()[-1:] if latest else []
                jobs.append({"id": rq_job.id, "queue": q.name, "description": rq_job.description, "reason": reason[0] if reason else ""})
        return {"failed": jobs}

    for module_name in PLATFORM_ROUTERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        app.include_router(module.build_router(settings, conn))
    return app


def _queue_counts(q) -> dict[str, int]:  # noqa: ANN001
    return {
        "queued": q.count,
        "started": StartedJobRegistry(queue=q).count,
        "scheduled": ScheduledJobRegistry(queue=q).count,
        "failed": FailedJobRegistry(queue=q).count,
    }


def app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory ocrhub.api:app_from_environment`."""
    from ocrhub.runtime import connect
    from ocrhub.settings import get_settings

    settings = get_settings()
    return create_app(settings, connect(settings))
