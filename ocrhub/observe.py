"""What an operator's tools ask a hub: GET /metrics (Prometheus) and GET /readyz (may traffic come?).

Counters and histograms come from Redis, where every process records them (`ocrhub.metrics`);
gauges are computed at scrape time from a fixed number of Redis commands, whatever the number of
jobs: queue lengths and registry sizes are counted, never listed.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import worker_registration
from rq.defaults import DEFAULT_WORKER_TTL
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from ocr_core.queue import all_queues
from ocrhub import __version__, metrics
from ocrhub.redis_server import pid_alive
from ocrhub.settings import Settings

log = logging.getLogger(__name__)

# A worker refreshes its key at least this often, idle or busy (RQ's dequeue timeout is its TTL
# minus 15 s, and the key lives TTL + 60 s): an older heartbeat means the process is gone.
HEARTBEAT_FRESH_S = DEFAULT_WORKER_TTL + 60
# A probe must answer while Redis hangs, not when the proxy gives up on it.
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class WorkerBeat:
    name: str
    busy: bool
    alive: bool


def workers(conn: redis.Redis) -> list[WorkerBeat]:
    """Every RQ worker registered (thread workers included): two commands, whatever their number."""
    keys = sorted(worker_registration.get_keys(connection=conn))
    with conn.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, "last_heartbeat", "death", "state", "pid", "hostname")
        rows = pipe.execute()
    host, now = socket.gethostname(), datetime.now(timezone.utc)
    beats = []
    for key, (heartbeat, death, state, pid, hostname) in zip(keys, rows):
        alive = heartbeat is not None and death is None and _fresh(heartbeat.decode(), now)
        # On this machine a dead process is known at once, before its key expires.
        if alive and hostname is not None and hostname.decode() == host and pid and pid.isdigit() and not pid_alive(int(pid)):
            alive = False
        beats.append(WorkerBeat(key.rpartition(":")[2], state == b"busy", alive))
    return beats


def _fresh(heartbeat: str, now: datetime) -> bool:
    try:
        beat = datetime.strptime(heartbeat, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return False
    return (now - beat).total_seconds() <= HEARTBEAT_FRESH_S


def queue_depths(conn: redis.Redis, settings: Settings) -> dict[tuple[str, str], int]:
    """(queue, state) → jobs, for states queued, started, scheduled, failed; one round trip."""
    states = ("queued", "started", "scheduled", "failed")
    queues = all_queues(conn, settings)
    with conn.pipeline(transaction=False) as pipe:
        for q in queues:
            # Counted as stored, without RQ's cleanup: a scrape reads and never moves a job.
            pipe.llen(q.key)
            pipe.zcard(StartedJobRegistry(queue=q).key)
            pipe.zcard(ScheduledJobRegistry(queue=q).key)
            pipe.zcard(FailedJobRegistry(queue=q).key)
        counts = iter(pipe.execute())
    return {(q.name, state): int(next(counts)) for q in queues for state in states}


@dataclass(frozen=True)
class Server:
    label: str  # URL without credentials
    in_use: int
    limit: int  # what admission allows now: 0 while the circuit is open, 1 for the half-open trial
    target: int
    circuit: str  # closed | open | half_open
    reason: str


def vllm_servers(conn: redis.Redis, settings: Settings) -> list[Server]:
    from ocr_core.vllm.servers import read, server_id

    now_ms = time.time() * 1000
    found = []
    for url in settings.vllm_urls:
        state = read(conn, server_id(url))
        circuit, limit = state.state, state.limit
        if circuit == "open":
            circuit, limit = ("open", 0) if now_ms < state.open_until_ms else ("half_open", 1)
        found.append(Server(_server_label(url), state.in_flight, limit, state.target, circuit, state.reason))
    return found


def _server_label(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def vllm_waiting(conn: redis.Redis) -> int:
    """Requests waiting for a vLLM permit (live tickets; an expired one's holder is gone)."""
    from ocr_core.limits.leases import PREFIX

    return int(conn.zcount(f"{PREFIX}:ticket-expiry", int(time.time() * 1000), "+inf"))


def gauges(conn: redis.Redis, settings: Settings) -> list[metrics.Family]:
    """The families computed at scrape time. Raises RedisError."""
    families = [metrics.gauge("ocrhub_build_info", "The ocrhub version and OCR engine this API runs with.", [({"version": __version__, "engine": settings.ocr_engine}, 1)])]
    depths = queue_depths(conn, settings)
    families.append(metrics.gauge(
        "ocrhub_queue_jobs",
        "Jobs per queue and state: queued (waiting for a worker), started (running), scheduled (waiting for a retry), failed (out of retries; `ocrhub requeue`).",
        [({"queue": q, "state": state}, n) for (q, state), n in depths.items()],
    ))
    beats = workers(conn)
    families.append(metrics.gauge("ocrhub_workers_alive", "RQ workers (job runners, threads included) whose heartbeat is fresh.", [(None, sum(b.alive for b in beats))]))
    families.append(metrics.gauge("ocrhub_workers_busy", "Live RQ workers running a job now.", [(None, sum(b.alive and b.busy for b in beats))]))
    if settings.vllm_urls:
        servers = vllm_servers(conn, settings)
        families += [
            metrics.gauge("ocrhub_vllm_permits_in_use", "Requests in flight to the vLLM server, across every worker.", [({"server": s.label}, s.in_use) for s in servers]),
            metrics.gauge("ocrhub_vllm_permit_limit", "Requests the server may have in flight now (0 while its circuit is open).", [({"server": s.label}, s.limit) for s in servers]),
            metrics.gauge("ocrhub_vllm_permit_target", "The limit wanted for the server (fixed, or what 'auto' decided); the limit in force climbs to it.", [({"server": s.label}, s.target) for s in servers]),
            metrics.gauge(
                "ocrhub_vllm_circuit",
                "The server's circuit: 1 for its state now (closed, open, half_open), 0 for the others.",
                [({"server": s.label, "state": state}, int(s.circuit == state)) for s in servers for state in ("closed", "open", "half_open")],
            ),
            metrics.gauge("ocrhub_vllm_waiting", "Requests waiting for a vLLM permit.", [(None, vllm_waiting(conn))]),
        ]
    memory = conn.info("memory")
    families.append(metrics.gauge("ocrhub_redis_used_memory_bytes", "Memory Redis uses (INFO memory used_memory).", [(None, int(memory.get("used_memory", 0)))]))
    families.append(metrics.gauge("ocrhub_redis_maxmemory_bytes", "Redis's memory cap; 0 = none (OCRHUB_REDIS_MAXMEMORY for the embedded one).", [(None, int(memory.get("maxmemory", 0)))]))
    return families


def readiness(conn: redis.Redis, settings: Settings) -> dict[str, dict[str, Any]]:
    """name → {"ok": bool, "detail": str} for redis, workers and engine."""
    try:
        conn.ping()
    except redis.RedisError as exc:
        why = f"redis unreachable: {type(exc).__name__}"
        return {
            "redis": {"ok": False, "detail": why},
            "workers": {"ok": False, "detail": "unknown: " + why},
            "engine": {"ok": False, "detail": "unknown: " + why},
        }
    checks: dict[str, dict[str, Any]] = {"redis": {"ok": True, "detail": "answers"}}
    try:
        alive = sum(beat.alive for beat in workers(conn))
        checks["workers"] = (
            {"ok": True, "detail": f"{alive} alive"}
            if alive
            else {"ok": False, "detail": f"no worker has sent a heartbeat in the last {HEARTBEAT_FRESH_S} s (is `ocrhub worker` running?)"}
        )
        checks["engine"] = _engine_check(conn, settings, checks["workers"])
    except redis.RedisError as exc:
        why = f"redis failed mid-check: {type(exc).__name__}"
        checks["redis"] = {"ok": False, "detail": why}
        checks.setdefault("workers", {"ok": False, "detail": "unknown: " + why})
        checks.setdefault("engine", {"ok": False, "detail": "unknown: " + why})
    return checks


def _engine_check(conn: redis.Redis, settings: Settings, workers_check: dict[str, Any]) -> dict[str, Any]:
    if settings.ocr_engine != "vllm":
        # The engine runs inside the workers: live workers are a live engine.
        return {"ok": workers_check["ok"], "detail": f"{settings.ocr_engine} runs in the workers"}
    if not settings.vllm_urls:
        return {"ok": False, "detail": "engine vllm without a server (OCRHUB_VLLM_URLS)"}
    servers = vllm_servers(conn, settings)
    taking = [s for s in servers if s.circuit != "open"]
    if taking:
        return {"ok": True, "detail": f"{len(taking)} of {len(servers)} vLLM server(s) take requests"}
    why = "; ".join(f"{s.label}: {s.reason or 'circuit open'}" for s in servers)
    if settings.vllm_fallback != "wait":
        return {"ok": True, "detail": f"every vLLM server's circuit is open, images are read by {settings.vllm_fallback} ({why})"}
    return {"ok": False, "detail": f"every vLLM server's circuit is open, jobs wait ({why})"}


def probe_connection(conn: redis.Redis, timeout: float = PROBE_TIMEOUT_S) -> redis.Redis:
    """A client to the same Redis whose commands give up after `timeout`: a hung Redis makes a probe fail, not hang."""
    pool = conn.connection_pool
    # Where and who only: the pool's other arguments (its retry policy, its own handlers) stay with it.
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _ADDRESS_AND_CREDENTIALS or k.startswith("ssl")}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=pool.connection_class,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # the prober (Prometheus, Kubernetes) asks again; a retry here only doubles the wait
            **kwargs,
        )
    )


_ADDRESS_AND_CREDENTIALS = frozenset({"host", "port", "path", "db", "username", "password", "credential_provider", "protocol"})


def build_router(settings: Settings, conn: redis.Redis) -> APIRouter:
    """GET /metrics and GET /readyz, both open here: the API's bearer gate (ocrhub.http_guard) closes
    /metrics unless OCRHUB_METRICS_PUBLIC."""
    probe = probe_connection(conn)

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        yield
        probe.connection_pool.disconnect()

    router = APIRouter(lifespan=lifespan)

    @router.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        started = time.perf_counter()
        try:
            computed = gauges(probe, settings)
            taken = {family.name for family in computed}
            # A recorded family named like a computed one would make the whole text unreadable.
            families = [family for family in metrics.recorded(probe) if family.name not in taken] + computed
        except redis.RedisError as exc:
            log.warning("metrics not available: redis unreachable (%s)", type(exc).__name__)
            return Response("# redis unreachable: no metrics\n", status_code=503, media_type=metrics.CONTENT_TYPE, headers={"Retry-After": "5"})
        families.append(metrics.gauge("ocrhub_scrape_seconds", "How long this scrape took to compute.", [(None, time.perf_counter() - started)]))
        return Response(metrics.render(families), media_type=metrics.CONTENT_TYPE)

    # Probes, not API: out of the OpenAPI schema, where a 503 by design would read as a server fault.
    @router.get("/readyz", include_in_schema=False)
    def ready() -> JSONResponse:
        checks = readiness(probe, settings)
        failing = [name for name, check in checks.items() if not check["ok"]]
        body: dict[str, Any] = {"ready": not failing, "checks": checks}
        if failing:
            body["failing"] = failing
        return JSONResponse(body, status_code=503 if failing else 200)

    return router


__all__ = ["build_router", "gauges", "readiness", "workers", "queue_depths", "vllm_servers", "probe_connection"]
