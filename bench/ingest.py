"""Acknowledgement speed of the Feishu webhook beside a bare FastAPI endpoint that only reads the body.

    python bench/ingest.py [--seconds 5] [--connections 32] [--rate 500]

One uvicorn process (its own, single worker) serves the hub's real API app with the Feishu router
and, beside it, POST /bare. Its Redis is a real embedded redis-server. Every webhook request is a
distinct image event, signed and encrypted as Feishu does, so each one is verified, decrypted,
deduplicated and queued for real. The load comes from this process over keep-alive connections,
with the same client for both endpoints:

  throughput   --connections requests in flight for --seconds: events/s
  latency      --rate events/s for --seconds, each timed from when it was due: p50/p99 ack

Goals (issue 4): the webhook sustains >= 0.4 of the bare endpoint's events/s, and p99 <= 20 ms at 500/s.
Server, Redis and client share the machine, so anything else running on it shows in both columns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from bots.feishu.crypto import Cipher, signature  # noqa: E402

APP_ID = "cli_bench00000000"
APP_SECRET = "bench-secret"
ENCRYPT_KEY = "bench-encrypt-key"
VERIFICATION_TOKEN = "bench-verification-token"
WARM_UP = 1.0
API_TOKEN = "bench-api-token"  # /bare sits behind the API token like every route but the webhooks


def bench_app() -> FastAPI:
    """The hub's API app (Feishu router included) plus POST /bare; uvicorn's factory in the server process."""
    from ocrhub.api import create_app
    from ocrhub.runtime import connect
    from ocrhub.settings import get_settings

    settings = get_settings()
    app = create_app(settings, connect(settings))

    @app.post("/bare")
    async def bare(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"msg": "success"})

    return app


def sealed_events(count: int) -> list[bytes]:
    """Whole HTTP requests for `count` distinct image messages, as Feishu would send them."""
    cipher = Cipher(ENCRYPT_KEY)
    chat = f"oc_{uuid.uuid4().hex}"
    requests = []
    for _ in range(count):
        now = str(int(time.time() * 1000))
        content = json.dumps({"image_key": f"img_v3_{uuid.uuid4().hex}"})
        payload = {
            "schema": "2.0",
            "header": {"event_id": uuid.uuid4().hex, "token": VERIFICATION_TOKEN, "create_time": now,
                       "event_type": "im.message.receive_v1", "tenant_key": "bench", "app_id": APP_ID},
            "event": {
                "sender": {"sender_id": {"open_id": "ou_bench", "user_id": "u1", "union_id": "on_1"}, "sender_type": "user", "tenant_key": "bench"},
                "message": {"message_id": f"om_{uuid.uuid4().hex}", "root_id": "", "parent_id": "", "create_time": now,
                            "update_time": now, "chat_id": chat, "chat_type": "group", "message_type": "image",
                            "content": content, "mentions": []},
            },
        }
        body = json.dumps({"encrypt": cipher.encrypt(json.dumps(payload).encode())}).encode()
        timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
        headers = {
            "X-Lark-Request-Timestamp": timestamp,
            "X-Lark-Request-Nonce": nonce,
            "X-Lark-Signature": signature(timestamp, nonce, ENCRYPT_KEY, body),
        }
        requests.append(http_request("/feishu/events", headers, body))
    return requests


def http_request(path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost less than what it measures."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def throughput(port: int, requests: list[bytes], seconds: float, connections: int) -> tuple[float, list[float], dict[int, int]]:
    pending = iter(requests)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        conn = await Connection.open(port)
        try:
            for request in pending:
                if time.perf_counter() >= deadline:
                    break
                sent = time.perf_counter()
                status = await conn.send(request)
                latencies.append(time.perf_counter() - sent)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    if len(latencies) >= len(requests) and seconds > WARM_UP:
        raise SystemExit("ran out of prepared events: raise the count in main()")
    return len(latencies) / elapsed, latencies, statuses


async def fixed_rate(port: int, requests: list[bytes], seconds: float, rate: float, pool: int) -> tuple[list[float], dict[int, int]]:
    """Each request is timed from when it was due, so a stalled server cannot hide its queue.

    `pool` keep-alive connections are opened beforehand; a request finding all of them busy opens another.
    """
    free: list[Connection] = list(await asyncio.gather(*(Connection.open(port) for _ in range(pool))))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def one(request: bytes, due: float) -> None:
        conn = free.pop() if free else await Connection.open(port)
        status = await conn.send(request)
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1
        free.append(conn)

    count = int(seconds * rate)
    if count > len(requests):
        raise SystemExit("ran out of prepared events: raise the count in main()")
    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(requests[i], due)))
    await asyncio.gather(*tasks)
    for conn in free:
        conn.close()
    return latencies, statuses


def images_queued(conn) -> tuple[int, int]:  # noqa: ANN001
    """Images the webhook run queued (each accepted event is one), and the batch jobs holding them."""
    from bots.feishu.intake import batch_images
    from ocr_core.queue import intake_queue
    from ocrhub.settings import load_settings

    jobs = intake_queue(conn, load_settings(queue_name="ocrhub")).get_jobs()
    return sum(len(batch_images(conn, *job.args)) for job in jobs), len(jobs)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def wait_for(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args()

    import redis

    from ocrhub.redis_server import EmbeddedRedis, free_port

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
        env.update(
            OCRHUB_REDIS_URL=server.url,
            OCRHUB_DATA_DIR=str(Path(tmp) / "data"),
            OCRHUB_FEISHU_APP_ID=APP_ID,
            OCRHUB_FEISHU_APP_SECRET=APP_SECRET,
            OCRHUB_FEISHU_ENCRYPT_KEY=ENCRYPT_KEY,
            OCRHUB_FEISHU_VERIFICATION_TOKEN=VERIFICATION_TOKEN,
            OCRHUB_LOG_LEVEL="WARNING",
            OCRHUB_API_TOKEN=API_TOKEN,
            PYTHONPATH=str(root),
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "bench.ingest:bench_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            env=env, cwd=root,
        )
        try:
            wait_for(port, process)
            conn = redis.Redis.from_url(server.url)
            # Distinct events for the webhook (a repeat would only be a cheap duplicate); the bare
            # endpoint may see the same bodies again, so it cycles through them.
            per_phase = int(6000 * args.seconds)
            print(f"preparing {2 * per_phase} signed, encrypted events…", file=sys.stderr)
            events = sealed_events(2 * per_phase)
            bare = [http_request("/bare", {"Authorization": f"Bearer {API_TOKEN}"}, r.split(b"\r\n\r\n", 1)[1]) for r in events[:per_phase]] * 4

            asyncio.run(throughput(port, bare, WARM_UP, args.connections))
            asyncio.run(throughput(port, events[-3000:], WARM_UP, args.connections))
            conn.flushdb()

            results = {}
            for name, requests in (("bare", bare), ("webhook", events[:per_phase])):
                rate, lat, statuses = asyncio.run(throughput(port, requests, args.seconds, args.connections))
                results[name] = {"rate": rate, "statuses": statuses, "saturated_p99": percentile(lat, 99)}
            queued = images_queued(conn)
            conn.flushdb()
            for name, requests in (("bare", bare), ("webhook", events[per_phase:])):
                lat, statuses = asyncio.run(fixed_rate(port, requests, args.seconds, args.rate, args.connections))
                results[name].update(p50=percentile(lat, 50), p99=percentile(lat, 99), mean=statistics.fmean(lat), fixed_statuses=statuses)
        finally:
            process.terminate()
            process.wait(10)

    bare_r, hook_r = results["bare"], results["webhook"]
    ratio = hook_r["rate"] / bare_r["rate"]
    print(f"\nthroughput, {args.connections} connections, {args.seconds:g} s each (one uvicorn worker, one Redis):")
    for name in ("bare", "webhook"):
        r = results[name]
        print(f"  {name:8s} {r['rate']:8.0f} events/s   p99 {r['saturated_p99'] * 1000:6.1f} ms   HTTP {r['statuses']}")
    print(f"  webhook / bare = {ratio:.2f}   (goal >= 0.40)   images queued by the webhook run: {queued[0]} in {queued[1]} batch jobs")
    print(f"\nack latency at {args.rate:g} events/s for {args.seconds:g} s, timed from when each was due:")
    for name in ("bare", "webhook"):
        r = results[name]
        print(f"  {name:8s} p50 {r['p50'] * 1000:6.2f} ms   p99 {r['p99'] * 1000:6.2f} ms   mean {r['mean'] * 1000:6.2f} ms   HTTP {r['fixed_statuses']}")
    verdict = (
        ratio >= 0.4 and hook_r["p99"] <= 0.020 and set(hook_r["statuses"]) == {200} == set(hook_r["fixed_statuses"])
        and queued[0] == sum(hook_r["statuses"].values())
    )
    print(f"\ngoals {'met' if verdict else 'NOT met'}: ratio {ratio:.2f} (>= 0.40), webhook p99 at {args.rate:g}/s {hook_r['p99'] * 1000:.1f} ms (<= 20 ms)")


if __name__ == "__main__":
    main()
