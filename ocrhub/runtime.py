"""How processes of one hub find each other: the Redis URL and API address a running `ocrhub up` publishes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import redis

from ocrhub.settings import Settings


def hub_file(settings: Settings) -> Path:
    return settings.data_dir / "hub.json"


def publish(settings: Settings, redis_url: str, api_url: str) -> None:
    path = hub_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"redis_url": redis_url, "api_url": api_url, "pid": os.getpid()}))
    tmp.replace(path)


def unpublish(settings: Settings) -> None:
    hub_file(settings).unlink(missing_ok=True)


def running_hub(settings: Settings) -> dict[str, str] | None:
    path = hub_file(settings)
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return info


def redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    hub = running_hub(settings)
    if hub:
        return hub["redis_url"]
    raise RuntimeError(
        f"no Redis to talk to: set OCRHUB_REDIS_URL, or start the hub with `ocrhub up` "
        f"(it publishes its embedded Redis in {hub_file(settings)})"
    )


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(redis_url(settings), health_check_interval=30)
