"""What a 0 or an unset setting stands for right now, as `ocrhub settings` notes it beside the value.

A running hub resolves some of them (its embedded Redis and its port, its worker processes, a
generated API token); the notes say what it resolved, or what `ocrhub up` would do.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from rq import Worker

from ocr_core.queue import ocr_queue
from ocrhub.auth import api_token, token_file
from ocrhub.runtime import redis_url, running_hub
from ocrhub.settings import SECRET_SHOWN, Settings, mask_url

# Asking the hub's Redis for its workers must not hold up `ocrhub settings` when it is away.
REDIS_TIMEOUT_S = 2


def notes_in_force(settings: Settings) -> dict[str, str]:
    """Notes by setting name on the values that 0 or unset stand for, as the running hub (if any) resolved them."""
    hub = running_hub(settings)
    notes: dict[str, str] = {}
    if not settings.redis_url:
        if hub:
            notes["redis_url"] = f"{mask_url(hub['redis_url'])} = the Redis of the hub running now (pid {hub['pid']})"
            port = urlsplit(hub["redis_url"]).port
            if not settings.redis_port and port:
                notes["redis_port"] = f"{port} in use now"
        else:
            notes["redis_url"] = "unset: `ocrhub up` starts an embedded redis-server in the data folder"
            if not settings.redis_port:
                notes["redis_port"] = "a free port at each start"
    running = running_workers(settings) if hub else None
    if hub and running is not None:
        notes["workers"] = f"{running} running in the hub now (pid {hub['pid']})"
    elif not settings.workers:
        notes["workers"] = f"{settings.worker_count} = one per CPU core"
    if not settings.worker_threads:
        notes["worker_threads"] = f"{settings.threads_per_worker} per worker process"
    if not settings.engine_threads:
        notes["engine_threads"] = "1: the workers share the cores" if settings.threads_per_engine else "all cores: one worker"
    if not settings.api_token.get_secret_value():
        try:
            generated = bool(api_token(settings))
        except OSError:
            generated = False
        path = token_file(settings)
        notes["api_token"] = f"{SECRET_SHOWN}, generated in {path}" if generated else f"unset: `ocrhub up` generates one into {path}"
    return notes


def running_workers(settings: Settings) -> int | None:
    """Worker processes serving the hub's queues (thread workers share their process's pid), or None if Redis is out of reach."""
    try:
        conn = redis.Redis.from_url(redis_url(settings), socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
        return len({(w.hostname, w.pid) for w in Worker.all(queue=ocr_queue(conn, settings))})
    except (RuntimeError, redis.RedisError):
        return None
