"""/metrics and /readyz against a real Redis: recorded families, scrape-time gauges, readiness, Redis away.

prometheus_client is not a dependency, so `parse_exposition` below is a strict reader of the text
format 0.0.4 (stricter than Prometheus: every family needs HELP and TYPE before its samples).
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq.executions import Execution
from rq.registry import FailedJobRegistry

from ocr_core.limits.leases import Permits
from ocr_core.queue import PROCESS, delivery_queue, intake_queue, ocr_queue
from ocr_core.vllm import servers
from ocrhub import metrics
from ocrhub.observe import build_router
from ocrhub.redis_server import EmbeddedRedis, free_port
from ocrhub.worker import build_worker

# -- a strict reader of the exposition format -------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_VALUE = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN"
_SAMPLE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>.*)\}})? (?P<value>{_VALUE})(?: -?\d+)?$")
_LABEL_PAIR = re.compile(rf'({_LABEL})="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class ExpositionError(AssertionError):
    pass


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL_PAIR.match(text, position)
        if not match:
            raise ExpositionError(f"bad label text at {text[position:]!r}")
        name, raw = match.group(1), match.group(2)
        if name in labels:
            raise ExpositionError(f"label {name} twice")
        labels[name] = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), raw)
        position = match.end()
    return labels


def _float(text: str) -> float:
    return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(text) or float(text)


def parse_exposition(text: str) -> dict[str, dict]:
    """family → {"type", "help", "samples": [(name, labels, value)]}; raises ExpositionError on anything off."""
    if not text.endswith("\n"):
        raise ExpositionError("the last line must end with a newline")
    families: dict[str, dict] = {}
    current: str | None = None
    seen: set[tuple[str, tuple]] = set()
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, name, rest = line[2:6], *(line[7:].split(" ", 1) + [""])[:2]
            if not re.fullmatch(_NAME, name):
                raise ExpositionError(f"bad family name {name!r}")
            family = families.setdefault(name, {"type": None, "help": None, "samples": []})
            if family["samples"]:
                raise ExpositionError(f"{kind} of {name} after its samples")
            if kind == "HELP":
                if family["help"] is not None or re.search(r"\\[^\\n]", rest):
                    raise ExpositionError(f"HELP of {name} twice or badly escaped")
                family["help"] = rest.replace("\\n", "\n").replace("\\\\", "\\")
            else:
                if family["type"] is not None or rest not in _TYPES:
                    raise ExpositionError(f"TYPE of {name} twice or unknown: {rest!r}")
                family["type"] = rest
            current = name
            continue
        if not line or line.startswith("#"):
            raise ExpositionError(f"unexpected line {line!r}")
        match = _SAMPLE.match(line)
        if not match:
            raise ExpositionError(f"bad sample line {line!r}")
        name, labels = match.group("name"), _labels(match.group("labels") or "")
        family = families.get(current or "")
        allowed = {current} | ({f"{current}_bucket", f"{current}_sum", f"{current}_count"} if family and family["type"] == "histogram" else set())
        if family is None or family["type"] is None or family["help"] is None or name not in allowed:
            raise ExpositionError(f"sample {name} outside a family with HELP and TYPE")
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ExpositionError(f"series {line!r} twice")
        seen.add(key)
        family["samples"].append((name, labels, _float(match.group("value"))))
    for name, family in families.items():
        if family["type"] is None or family["help"] is None:
            raise ExpositionError(f"{name} lacks HELP or TYPE")
        if family["type"] == "histogram":
            _check_histogram(name, family["samples"])
    return families


def _check_histogram(name: str, samples: list) -> None:
    by_set: dict[tuple, dict] = {}
    for sample_name, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        entry = by_set.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sample_name.endswith("_bucket"):
            entry["buckets"].append((_float(labels["le"]), value))
        else:
            entry[sample_name.rpartition("_")[2]] = value
    for rest, entry in by_set.items():
        bounds = [b for b, _ in entry["buckets"]]
        counts = [c for _, c in entry["buckets"]]
        if bounds != sorted(bounds) or not bounds or bounds[-1] != math.inf:
            raise ExpositionError(f"{name}{rest}: buckets out of order or without +Inf")
        if counts != sorted(counts):
            raise ExpositionError(f"{name}{rest}: buckets not cumulative")
        if entry["sum"] is None or entry["count"] != counts[-1]:
            raise ExpositionError(f"{name}{rest}: _sum missing or _count differs from the +Inf bucket")


def values(families: dict, name: str) -> dict[tuple, float]:
    """Sample values of one family (or histogram part), keyed by their sorted labels."""
    family = families[re.sub(r"_(bucket|sum|count)$", "", name) if name not in families else name]
    return {tuple(sorted(labels.items())): value for sample, labels, value in family["samples"] if sample == name}


GOOD = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 2\n'


@pytest.mark.parametrize(
    "text",
    [
        GOOD.rstrip("\n"),
        'a_total{x="1"} 2\n',  # no HELP/TYPE
        GOOD + 'a_total{x="1"} 3\n',  # same series twice
        GOOD.replace('x="1"', 'x="a\\q"'),  # bad escape
        GOOD.replace('x="1"', "x=1"),
        GOOD.replace(" 2\n", " inf\n"),
        GOOD + "# HELP a_total again\n",
        GOOD.replace("counter", "count"),
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",  # not cumulative
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",  # no +Inf
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",  # count differs
        GOOD + "b 1\n",  # another family's sample without its own TYPE
    ],
)
def test_the_reader_refuses_what_prometheus_would_misread(text: str) -> None:
    with pytest.raises(ExpositionError):
        parse_exposition(text)


def test_the_reader_accepts_good_text() -> None:
    assert values(parse_exposition(GOOD), "a_total") == {(("x", "1"),): 2}


# -- the router -------------------------------------------------------------------------------


def client_for(settings, conn: redis.Redis) -> TestClient:
    app = FastAPI()
    app.include_router(build_router(settings, conn))
    return TestClient(app)


def scrape(settings, conn: redis.Redis) -> dict[str, dict]:
    response = client_for(settings, conn).get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_exposition(response.text)


def register_worker(conn: redis.Redis, settings, name: str):
    worker = build_worker(conn, settings, name)
    worker.register_birth()
    return worker


def test_recorded_counters_and_histograms_render_with_their_help(conn: redis.Redis, settings) -> None:
    odd = 'bot "α"\\\nline'
    metrics.count(conn, "ocrhub_webhook_events_total", {"platform": "feishu", "bot": odd, "outcome": "refused", "reason": "signature"}, 3)
    metrics.count(conn, "ocrhub_webhook_events_total", {"platform": "feishu", "bot": "default", "outcome": "queued", "reason": ""})
    metrics.count(conn, "ocrhub_something_new_total", None, 2)
    metrics.count(conn, "bad-name total", {"bad label": "x"})
    metrics.count(conn, "ocrhub_workers_alive", None, 7)  # a computed family's name: the computed one wins
    for seconds in (0.05, 0.3, 7.0, 400.0):
        metrics.observe(conn, "ocrhub_ocr_seconds", {"engine": "rapidocr"}, seconds)
    metrics.observe(conn, "ocrhub_ocr_seconds", {"engine": "vllm"}, 0.1)
    metrics.observe(conn, "ocrhub_ocr_seconds", {"engine": "vllm"}, math.nan)  # not a duration: ignored

    families = scrape(settings, conn)

    events = families["ocrhub_webhook_events_total"]
    assert events["type"] == "counter" and events["help"] == metrics.HELP["ocrhub_webhook_events_total"]
    assert values(families, "ocrhub_webhook_events_total")[(("bot", odd), ("outcome", "refused"), ("platform", "feishu"), ("reason", "signature"))] == 3
    assert families["ocrhub_something_new_total"]["help"] == metrics.GENERIC_HELP
    assert values(families, "ocrhub_something_new_total") == {(): 2}
    assert values(families, "bad_name_total") == {(("bad_label", "x"),): 1}
    assert values(families, "ocrhub_workers_alive") == {(): 0}

    ocr = families["ocrhub_ocr_seconds"]
    assert ocr["type"] == "histogram" and ocr["help"] == metrics.HELP["ocrhub_ocr_seconds"]
    buckets = values(families, "ocrhub_ocr_seconds_bucket")
    rapid = {dict(k)["le"]: v for k, v in buckets.items() if dict(k)["engine"] == "rapidocr"}
    assert (rapid["0.1"], rapid["0.25"], rapid["0.5"], rapid["10"], rapid["300"], rapid["+Inf"]) == (1, 1, 2, 3, 3, 4)
    assert values(families, "ocrhub_ocr_seconds_count")[(("engine", "rapidocr"),)] == 4
    assert values(families, "ocrhub_ocr_seconds_sum")[(("engine", "rapidocr"),)] == pytest.approx(407.35)
    assert values(families, "ocrhub_ocr_seconds_count")[(("engine", "vllm"),)] == 1


def test_a_metric_recorded_by_another_process_is_scraped(conn: redis.Redis, settings) -> None:
    url = settings.redis_url
    code = f"import redis; from ocrhub import metrics; metrics.count(redis.Redis.from_url({url!r}), 'ocrhub_ocr_total', {{'engine': 'rapidocr', 'outcome': 'ok'}}, 5)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).parent.parent)
    families = scrape(settings, conn)
    assert values(families, "ocrhub_ocr_total") == {(("engine", "rapidocr"), ("outcome", "ok")): 5}
    assert families["ocrhub_ocr_total"]["help"] == metrics.HELP["ocrhub_ocr_total"]


def test_queue_depths_per_queue_and_state(conn: redis.Redis, settings) -> None:
    ocr = ocr_queue(conn, settings)
    for _ in range(3):
        ocr.enqueue_call(PROCESS, args=({},))
    running = ocr.enqueue_call(PROCESS, args=({},))
    conn.lrem(ocr.key, 0, running.id)  # dequeued by a worker, which then starts it
    with conn.pipeline() as pipe:
        Execution.create(running, ttl=60, pipeline=pipe)
        pipe.execute()
    ocr.enqueue_at(datetime.now(timezone.utc) + timedelta(hours=1), PROCESS, {})
    deliver = delivery_queue(conn, settings)
    FailedJobRegistry(queue=deliver).add(deliver.create_job(PROCESS, args=({},)), ttl=600, exc_string="boom")
    intake_queue(conn, settings).enqueue_call(PROCESS, args=({},))

    depths = values(scrape(settings, conn), "ocrhub_queue_jobs")
    expected = {("ocrhub", "queued"): 3, ("ocrhub", "started"): 1, ("ocrhub", "scheduled"): 1, ("ocrhub-deliver", "failed"): 1, ("ocrhub-intake", "queued"): 1}
    for queue_name in ("ocrhub", "ocrhub-deliver", "ocrhub-intake"):
        for state in ("queued", "started", "scheduled", "failed"):
            assert depths[(("queue", queue_name), ("state", state))] == expected.get((queue_name, state), 0), (queue_name, state)


def test_workers_alive_count_only_fresh_heartbeats_of_live_processes(conn: redis.Redis, settings) -> None:
    live = register_worker(conn, settings, "obs-live")
    register_worker(conn, settings, "obs-live.2")
    stale = register_worker(conn, settings, "obs-stale")
    conn.hset(stale.key, "last_heartbeat", "2020-01-01T00:00:00.000000Z")
    gone = register_worker(conn, settings, "obs-gone")
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    conn.hset(gone.key, "pid", finished.pid)  # a process of this machine that no longer exists
    dead = register_worker(conn, settings, "obs-dead")
    dead.register_death()
    live.set_state("busy")

    families = scrape(settings, conn)
    assert values(families, "ocrhub_workers_alive") == {(): 2}
    assert values(families, "ocrhub_workers_busy") == {(): 1}


def test_ready_when_redis_answers_and_a_worker_is_alive(conn: redis.Redis, settings) -> None:
    client = client_for(settings, conn)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["workers", "engine"]
    assert "heartbeat" in response.json()["checks"]["workers"]["detail"]

    worker = register_worker(conn, settings, "obs-ready")
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["ready"] is True
    assert response.json()["checks"]["workers"] == {"ok": True, "detail": "1 alive"}

    worker.register_death()
    assert client.get("/readyz").status_code == 503


def test_vllm_limiter_gauges_and_engine_readiness(conn: redis.Redis, settings, set_env) -> None:
    first, second = "http://ocr:s3cret@127.0.0.1:18001", "http://127.0.0.1:18002"
    settings = set_env(ocr_engine="vllm", vllm_urls=f"{first},{second}", vllm_fallback="wait")
    sid_a, sid_b = servers.register(conn, first, 6), servers.register(conn, second, 4)
    servers.open_circuit(conn, sid_b, "connection refused", cooldown=60)
    permits = Permits(conn, [sid_a, sid_b], lease_ttl=30)
    try:
        leases = [permits.acquire(100, "chat", time.monotonic() + 5) for _ in range(2)]
        families = scrape(settings, conn)
        a, b = (("server", "http://127.0.0.1:18001"),), (("server", "http://127.0.0.1:18002"),)
        assert "s3cret" not in str(families)
        assert values(families, "ocrhub_vllm_permits_in_use") == {a: 2, b: 0}
        assert values(families, "ocrhub_vllm_permit_limit") == {a: 6, b: 0}
        assert values(families, "ocrhub_vllm_permit_target") == {a: 6, b: 4}
        circuit = values(families, "ocrhub_vllm_circuit")
        assert circuit[(a[0], ("state", "closed"))] == 1 and circuit[(b[0], ("state", "open"))] == 1
        assert circuit[(b[0], ("state", "closed"))] == 0
        assert values(families, "ocrhub_vllm_waiting") == {(): 0}
        for lease in leases:
            permits.release(lease, "ok")
    finally:
        permits.close()

    register_worker(conn, settings, "obs-vllm")
    client = client_for(settings, conn)
    assert client.get("/readyz").status_code == 200

    servers.open_circuit(conn, sid_a, "HTTP 500", cooldown=60)
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["failing"] == ["engine"]
    assert "HTTP 500" in response.json()["checks"]["engine"]["detail"]
    assert "s3cret" not in response.text

    assert client_for(set_env(vllm_fallback="rapidocr"), conn).get("/readyz").status_code == 200

    servers.open_circuit(conn, sid_a, "HTTP 500", cooldown=0)  # cooled down: the next request is a trial
    half_open = client_for(set_env(vllm_fallback="wait"), conn)
    assert half_open.get("/readyz").status_code == 200
    circuit = values(parse_exposition(half_open.get("/metrics").text), "ocrhub_vllm_circuit")
    assert circuit[(("server", "http://127.0.0.1:18001"), ("state", "half_open"))] == 1


def test_redis_memory_and_its_cap(conn: redis.Redis, settings) -> None:
    previous = conn.config_get("maxmemory")["maxmemory"]
    conn.config_set("maxmemory", 512 * 1024 * 1024)
    try:
        families = scrape(settings, conn)
    finally:
        conn.config_set("maxmemory", previous)
    assert values(families, "ocrhub_redis_maxmemory_bytes") == {(): 512 * 1024 * 1024}
    assert values(families, "ocrhub_redis_used_memory_bytes")[()] > 100_000


def test_a_scrape_costs_the_same_commands_with_hundreds_of_jobs(conn: redis.Redis, settings) -> None:
    for n in range(3):
        register_worker(conn, settings, f"obs-fixed-{n}")
    client = client_for(settings, conn)

    def commands_of_one_scrape() -> int:
        client.get("/metrics")  # warm: the probe connection is open
        conn.config_resetstat()
        assert client.get("/metrics").status_code == 200
        return int(conn.info("stats")["total_commands_processed"])

    empty = commands_of_one_scrape()
    ocr = ocr_queue(conn, settings)
    with conn.pipeline() as pipe:
        for _ in range(300):
            ocr.enqueue_call(PROCESS, args=({},), pipeline=pipe)
        pipe.execute()
    failed = FailedJobRegistry(queue=ocr)
    for _ in range(100):
        failed.add(ocr.create_job(PROCESS, args=({},)), ttl=600, exc_string="boom")
    assert commands_of_one_scrape() == empty

    timings = []
    for _ in range(5):
        started = time.perf_counter()
        client.get("/metrics")
        timings.append(time.perf_counter() - started)
    assert min(timings) < 0.05, timings


def test_redis_unreachable_answers_503_never_500(settings) -> None:
    away = redis.Redis(host="127.0.0.1", port=free_port())
    client = client_for(settings, away)
    metrics_response = client.get("/metrics")
    assert metrics_response.status_code == 503
    assert metrics_response.text.startswith("# redis unreachable")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["redis", "workers", "engine"]


def test_a_hung_redis_fails_the_probes_in_seconds(tmp_path: Path, settings) -> None:
    with EmbeddedRedis(tmp_path / "hung", persist=False) as server:
        conn = redis.Redis.from_url(server.url)
        client = client_for(settings, conn)
        assert client.get("/metrics").status_code == 200
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert client.get("/readyz").status_code == 503
            assert client.get("/metrics").status_code == 503
            assert time.monotonic() - started < 6  # two probes of PROBE_TIMEOUT_S each
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert client.get("/metrics").status_code == 200  # back as soon as Redis is
        conn.close()


def test_recording_never_raises_without_redis() -> None:
    away = redis.Redis(host="127.0.0.1", port=free_port(), retry=Retry(NoBackoff(), 0))
    metrics.count(away, "ocrhub_ocr_total", {"engine": "x", "outcome": "ok"})
    metrics.observe(away, "ocrhub_ocr_seconds", {"engine": "x"}, 1.0)
