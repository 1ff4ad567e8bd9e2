"""The vLLM servers as every worker sees them: one Redis hash each, beside its leases.

Fields: url, target (the limit wanted: fixed, or what `auto` decided), limit (in force now; it
climbs to target by slow start after a server comes back), kv_tokens (KV capacity, 0 when
unknown), state (closed | open), open_until, reason and changed_at (why the limit last changed),
fails / opens / ok / rejections (request outcomes, written by `Permits.release`), and `metrics`,
the last scrape as JSON.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from ocr_core.limits.leases import PREFIX


def server_id(url: str) -> str:
    return hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:12]


def server_key(sid: str, prefix: str = PREFIX) -> str:
    return f"{prefix}:server:{sid}"


@dataclass(frozen=True)
class ServerState:
    id: str
    url: str
    target: int
    limit: int
    kv_tokens: int
    state: str
    open_until_ms: int
    reason: str
    changed_at_ms: int
    in_flight: int
    kv_in_flight: int
    fails: int
    ok: int
    rejections: int
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def register(conn: redis.Redis, url: str, target: int, *, prefix: str = PREFIX) -> str:
    """Make the server known; a limit already in force (another worker's, the controller's) is kept."""
    sid = server_id(url)
    key = server_key(sid, prefix)
    pipe = conn.pipeline()
    pipe.hset(key, "url", url.rstrip("/"))
    pipe.hsetnx(key, "target", target)
    pipe.hsetnx(key, "limit", target)
    pipe.hsetnx(key, "state", "closed")
    pipe.hsetnx(key, "reason", "start")
    pipe.hsetnx(key, "changed_at", int(time.time() * 1000))
    pipe.execute()
    return sid


def set_limit(conn: redis.Redis, sid: str, *, limit: int, target: int | None = None, reason: str = "", prefix: str = PREFIX) -> None:
    fields: dict[str, Any] = {"limit": limit}
    if target is not None:
        fields["target"] = target
    if reason:
        fields.update(reason=reason, changed_at=int(time.time() * 1000))
    conn.hset(server_key(sid, prefix), mapping=fields)
    conn.publish(f"{prefix}:released", sid)  # a raised limit admits waiters at once


def open_circuit(conn: redis.Redis, sid: str, reason: str, cooldown: float, *, prefix: str = PREFIX) -> None:
    now_ms = int(time.time() * 1000)
    conn.hset(server_key(sid, prefix), mapping={"state": "open", "open_until": now_ms + int(cooldown * 1000), "reason": reason, "changed_at": now_ms})


def close_circuit(conn: redis.Redis, sid: str, reason: str, *, prefix: str = PREFIX) -> None:
    set_limit(conn, sid, limit=1, reason=reason, prefix=prefix)
    conn.hset(server_key(sid, prefix), mapping={"state": "closed", "fails": 0})


def save_metrics(conn: redis.Redis, sid: str, metrics: dict[str, Any], *, prefix: str = PREFIX) -> None:
    conn.hset(server_key(sid, prefix), "metrics", json.dumps(metrics))


def read(conn: redis.Redis, sid: str, *, prefix: str = PREFIX) -> ServerState:
    key = server_key(sid, prefix)
    # Live leases only: an expired one (its holder died) is gone, whether or not a waiter purged it yet.
    pipe = conn.pipeline()
    pipe.hgetall(key)
    pipe.zrangebyscore(f"{key}:leases", int(time.time() * 1000), "+inf")
    pipe.hgetall(f"{key}:costs")
    raw, live, all_costs = pipe.execute()
    data = {k.decode(): v.decode() for k, v in raw.items()}
    in_flight = len(live)
    costs = [all_costs[member] for member in live if member in all_costs]

    def number(name: str) -> int:
        try:
            return int(float(data.get(name, "0") or 0))
        except ValueError:
            return 0

    return ServerState(
        id=sid,
        url=data.get("url", ""),
        target=number("target"),
        limit=number("limit"),
        kv_tokens=number("kv_tokens"),
        state=data.get("state", "closed"),
        open_until_ms=number("open_until"),
        reason=data.get("reason", ""),
        changed_at_ms=number("changed_at"),
        in_flight=int(in_flight),
        kv_in_flight=sum(int(float(c)) for c in costs),
        fails=number("fails"),
        ok=number("ok"),
        rejections=number("rejections"),
        metrics=json.loads(data.get("metrics") or "{}"),
    )


def report(conn: redis.Redis, urls: list[str], *, prefix: str = PREFIX) -> list[dict[str, Any]]:
    """Every configured server's limit in force, why it last changed, its circuit and last scrape."""
    rows = []
    for url in urls:
        state = read(conn, server_id(url), prefix=prefix)
        row = state.to_dict()
        row["url"] = url.rstrip("/")
        row["open_for_s"] = max(0.0, (state.open_until_ms - time.time() * 1000) / 1000) if state.state == "open" else 0.0
        rows.append(row)
    return rows
