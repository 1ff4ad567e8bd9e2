"""The admin page's operations and knowledge-base views: queues, workers, the engine and its limiter,
recent and failed jobs (with a requeue), and full-text search of the local store with thumbnails."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import redis
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response

from ocr_core.store import links_of, receipts
from ocrhub.observe import queue_depths, workers
from ocrhub.requeue import failed_jobs, hand_back, last_errors
from ocrhub.settings import Settings
from sinks.local import MAX_SEARCH_LIMIT, LocalStore, StoredResult

FAILED_SHOWN = 50
RECENT_SHOWN = 20


def build_router(settings: Settings, conn: redis.Redis) -> APIRouter:
    router = APIRouter(prefix="/admin/api", tags=["admin"])

    @functools.cache
    def store() -> LocalStore:
        return LocalStore(settings.data_dir / "results.sqlite3")

    @router.get("/operations")
    def operations() -> dict[str, Any]:
        """Queue depths, workers alive, the engine and its limiter, recent results and failed jobs."""
        from ocrhub.api import engine_report

        depths: dict[str, dict[str, int]] = {}
        for (queue, state), count in queue_depths(conn, settings).items():
            depths.setdefault(queue, {})[state] = count
        failed = failed_jobs(conn, settings)[:FAILED_SHOWN]
        beats = workers(conn)
        return {
            "queues": depths,
            "workers": {"alive": sum(b.alive for b in beats), "busy": sum(b.alive and b.busy for b in beats), "registered": len(beats)},
            "engine": engine_report(conn, settings),
            "failed": [
                {"id": f.job_id, "queue": f.registry.name, "reason": reason}
                for f, reason in zip(failed, last_errors(conn, failed))
            ],
            "recent": [_recent(row) for row in store().recent(RECENT_SHOWN)],
        }

    @router.post("/failed/{job_id}/requeue")
    def requeue(request: Request, job_id: str = Path(max_length=200)) -> dict[str, Any]:
        """Hand a failed job back to its queue, with its retries renewed."""
        for failed in failed_jobs(conn, settings):
            if failed.job_id == job_id:
                if not hand_back(conn, settings, failed):
                    raise HTTPException(409, "the job left the failed list meanwhile")
                return {"requeued": job_id, "queue": failed.registry.name}
        raise HTTPException(404, f"no failed job {job_id!r}")

    @router.get("/search")
    def search(
        q: str = Query(max_length=500, description="Words that every result contains, matched as plain text."),
        limit: int = Query(20, ge=1, le=MAX_SEARCH_LIMIT),
    ) -> dict[str, Any]:
        """The local knowledge base's matches, newest first, each with its thumbnail's address."""
        rows = store().search(q, limit=limit)
        delivered = receipts(conn, [row.job_id for row in rows])
        return {"query": q, "results": [{**_hit(row), "links": _links(delivered.get(row.job_id, {}))} for row in rows]}

    @router.get("/thumbnails/{image_sha256}", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(image_sha256: str = Path(pattern=r"^[0-9a-f]{64}$")) -> Response:
        jpeg = store().thumbnail(image_sha256)
        if jpeg is None:
            raise HTTPException(404, "no thumbnail")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    return router


def _hit(row: StoredResult) -> dict[str, Any]:
    return {
        "job_id": row.job_id, "platform": row.platform, "bot_id": row.bot_id, "chat_id": row.chat_id, "sender": row.sender,
        "sent_at": row.sent_at, "text": row.text, "engine": row.engine, "source_url": row.source_url,
        "thumbnail": f"/admin/api/thumbnails/{row.image_sha256}",
    }


def _links(receipts_by_sink: dict[str, str]) -> list[dict[str, str]]:
    """Where else the text went, as links: the Notion row a Notion sink wrote, for one."""
    return [{"sink": sink, "url": url} for sink, url in links_of(receipts_by_sink)]


def _recent(row: StoredResult) -> dict[str, Any]:
    return {**_hit(row), "text": row.text[:200], "error": row.error, "stored_at": row.created_at, "seconds": _seconds(row.sent_at, row.created_at)}


def _seconds(sent_at: str, stored_at: str) -> float | None:
    """From the message's time to its text stored: what the chat user waited, roughly."""
    try:
        return round((datetime.fromisoformat(stored_at) - datetime.fromisoformat(sent_at)).total_seconds(), 1)
    except (TypeError, ValueError):
        return None
