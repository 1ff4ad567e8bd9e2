"""What the core keeps in Redis: image bytes for retries, results for sinks, a cache by image hash."""

from __future__ import annotations

import hashlib
import json

import redis

from ocr_core.job import ImageJob, Line, OcrResult

PREFIX = "ocrhub"


def blob_key(job_id: str) -> str:
    return f"{PREFIX}:blob:{job_id}"


def save_image(conn: redis.Redis, job_id: str, data: bytes, ttl: int) -> str:
    key = blob_key(job_id)
    conn.set(key, data, ex=ttl)
    return key


def load_image(conn: redis.Redis, job: ImageJob | str) -> bytes | None:
    """The stored bytes for a job (by its blob key, else by its id), or None once expired."""
    if isinstance(job, str):
        return conn.get(blob_key(job))
    return conn.get(job.blob or blob_key(job.job_id))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cache_key(engine: str, digest: str) -> str:
    return f"{PREFIX}:ocr-cache:{engine}:{digest}"


def cached_reading(conn: redis.Redis, engine: str, digest: str) -> tuple[tuple[Line, ...], int, int] | None:
    raw = conn.get(_cache_key(engine, digest))
    if raw is None:
        return None
    data = json.loads(raw)
    return tuple(Line.from_dict(x) for x in data["lines"]), data["width"], data["height"]


def cache_reading(conn: redis.Redis, engine: str, digest: str, lines: tuple[Line, ...], width: int, height: int, ttl: int) -> None:
    payload = {"lines": [line.to_dict() for line in lines], "width": width, "height": height}
    conn.set(_cache_key(engine, digest), json.dumps(payload), ex=ttl)


def result_key(job_id: str) -> str:
    return f"{PREFIX}:result:{job_id}"


def save_result(conn: redis.Redis, result: OcrResult, ttl: int) -> None:
    conn.set(result_key(result.job.job_id), json.dumps(result.to_dict(), ensure_ascii=False), ex=ttl)


def load_result(conn: redis.Redis, job_id: str) -> OcrResult | None:
    raw = conn.get(result_key(job_id))
    return OcrResult.from_dict(json.loads(raw)) if raw is not None else None
