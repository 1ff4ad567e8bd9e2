"""What the core keeps in Redis: image bytes while a job still needs them, results for sinks, a cache by image hash.

Image bytes are the bulk of Redis's memory, so they live only as long as someone holds them:
the job that reads them (`READER`), then each delivery of a readable result (`delivery_holder`),
since a sink may upload the image and a retry must find it. The last holder to finish deletes
them. One that failed for good leaves them a bounded while (`keep_for`), for an admin's requeue.
The TTL given when they were saved stays the upper bound whatever happens to a holder.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

import redis
from redis.client import Pipeline

from ocr_core.job import ImageJob, Line, OcrResult

PREFIX = "ocrhub"
_URL = re.compile(r"https://[^\s()]+")
READER = "read"


def blob_key(job_id: str) -> str:
    return f"{PREFIX}:blob:{job_id}"


def holders_key(job_id: str) -> str:
    return f"{PREFIX}:blob-holders:{job_id}"


def kept_key(job_id: str) -> str:
    """Exists while a holder that failed for good wants the bytes kept."""
    return f"{PREFIX}:blob-kept:{job_id}"


def delivery_holder(sink: str) -> str:
    return f"deliver:{sink}"


def save_image(conn: redis.Redis, job_id: str, data: bytes, ttl: int) -> str:
    """Store the bytes, held by the job's reading (`READER`) until it releases them."""
    key = blob_key(job_id)
    with conn.pipeline() as pipe:
        pipe.set(key, data, ex=ttl)
        _hold(pipe, job_id, [READER], ttl)
        pipe.execute()
    return key


def hold_image(conn: redis.Redis, job_id: str, holders: Iterable[str], ttl: int) -> None:
    """Keep the bytes until each of `holders` has released them (and no longer than they were saved for)."""
    with conn.pipeline() as pipe:
        _hold(pipe, job_id, holders, ttl)
        pipe.execute()


def _hold(pipe: Pipeline, job_id: str, holders: Iterable[str], ttl: int) -> None:
    names = list(holders)
    if names:
        pipe.sadd(holders_key(job_id), *names)
        pipe.expire(holders_key(job_id), ttl)


# KEYS: bytes, holders, kept marker. ARGV: the holder leaving, seconds to keep the bytes after its
# failure (0: it succeeded). Atomic, so two deliveries finishing together cannot both skip the delete.
_RELEASE = """
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local keep = tonumber(ARGV[2])
if keep > 0 then
  redis.call('SET', KEYS[3], '1', 'EX', keep)
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
local kept = redis.call('PTTL', KEYS[3])
if kept > 0 then
  local left = redis.call('PTTL', KEYS[1])
  if left == -1 or kept < left then
    redis.call('PEXPIRE', KEYS[1], kept)
  end
  return 2
end
redis.call('DEL', KEYS[1])
return 3
"""


def release_image(conn: redis.Redis, job_id: str, holder: str, *, keep_for: int = 0) -> None:
    """`holder` is done with the bytes for good. The last holder out deletes them, unless a holder
    failed for good: then they stay `keep_for` seconds after that failure. A holder that never
    held them (or released them already) changes nothing."""
    conn.eval(_RELEASE, 3, blob_key(job_id), holders_key(job_id), kept_key(job_id), holder, max(int(keep_for), 0))


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


def receipts_key(job_id: str) -> str:
    return f"{PREFIX}:receipts:{job_id}"


def note_receipt(conn: redis.Redis, job_id: str, sink: str, where: str, ttl: int) -> None:
    """What a sink said it did with a result (e.g. "notion page https://…"), for the admin page to link."""
    with conn.pipeline() as pipe:
        pipe.hset(receipts_key(job_id), sink, where[:2000])
        pipe.expire(receipts_key(job_id), ttl)
        pipe.execute()


def receipts(conn: redis.Redis, job_ids: list[str]) -> dict[str, dict[str, str]]:
    """job id → sink → receipt, for the jobs that still have them."""
    with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(receipts_key(job_id))
        found = pipe.execute()
    return {job_id: {k.decode(): v.decode() for k, v in got.items()} for job_id, got in zip(job_ids, found) if got}


def links_of(receipts_by_sink: dict[str, str]) -> list[tuple[str, str]]:
    """(sink, link) for each receipt that carries an https link, by sink name."""
    found = []
    for sink, receipt in sorted(receipts_by_sink.items()):
        match = _URL.search(receipt)
        if match:
            found.append((sink, match.group(0)))
    return found
