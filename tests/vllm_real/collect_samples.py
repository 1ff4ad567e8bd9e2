"""Record what a real vLLM answers, for the emulator's fidelity, and measure it.

    .venv-vllm/bin/python tests/vllm_real/collect_samples.py [--out tests/vllm_real/samples] [--only samples|bench|preempt]

Starts real servers through server.real_vllm (one at a time) and writes into OUT:
health.txt, models.json, chat_completion.json, chat_stream.txt, overloaded_503.json,
metrics.txt (taken mid-burst: running and waiting non-zero), metrics_preemption.txt,
and measurements.json (start-up, RSS, throughput with/without the no-repeat processor).
Runs with the vllm venv's python (Pillow for the test PNGs); server.py itself is stdlib.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import server as real  # noqa: E402

HERE = Path(__file__).resolve().parent


# -- images and requests -------------------------------------------------------------------------
def png(text: str, size: tuple[int, int] = (448, 448)) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for row in range(0, size[1] - 20, 24):
        draw.text((10, 6 + row), f"{text} line {row // 24}", fill="black")
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def chat_body(model: str, image: bytes, max_tokens: int = 64, **extra) -> dict:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "Extract all text in the image."},
                ],
            }
        ],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        **extra,
    }


def request(port: int, method: str, path: str, body: dict | None = None, timeout: float = 600):
    """One HTTP exchange; returns (status, reason, version, headers list, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        version = {10: "HTTP/1.0", 11: "HTTP/1.1"}.get(resp.version, str(resp.version))
        return resp.status, resp.reason, version, resp.getheaders(), raw
    finally:
        conn.close()


def http_text(status, reason, version, headers, raw) -> str:
    lines = [f"{version} {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    return "\n".join(lines) + "\n\n" + raw.decode(errors="replace")


def metric(text: str, name: str) -> float:
    """Sum of all samples of `name` (no suffix matching) in a Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def group_rss_mb(pgid: int, field: str = "Rss") -> float:
    """Memory of every process in a process group, in MiB: field "Rss" (shared pages
    counted once per process) or "Pss" (shared pages split between them)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # pgrp
                continue
            rollup = Path(f"/proc/{entry}/smaps_rollup").read_text()
            total += int(re.search(rf"^{field}:\s+(\d+)", rollup, re.M).group(1))
        except (OSError, AttributeError, IndexError, ValueError):
            continue
    return round(total / 1024, 1)


# -- the pieces ----------------------------------------------------------------------------------
def collect_basic(srv: real.RealVllm, out: Path) -> None:
    port = srv.port
    (out / "health.txt").write_text(http_text(*request(port, "GET", "/health")))
    models = request(port, "GET", "/v1/models")
    (out / "models.json").write_bytes(models[4])
    (out / "models_http.txt").write_text(http_text(*models))
    img = png("Invoice 2024-05-01 Total 42.00")
    done = request(port, "POST", "/v1/chat/completions", chat_body(srv.model, img, 48))
    assert done[0] == 200, done
    (out / "chat_completion.json").write_bytes(done[4])
    (out / "chat_completion_http.txt").write_text(http_text(*done[:4], b"(body in chat_completion.json)"))
    stream = request(
        port,
        "POST",
        "/v1/chat/completions",
        chat_body(srv.model, img, 16, stream=True, stream_options={"include_usage": True}),
    )
    assert stream[0] == 200, stream
    (out / "chat_stream.txt").write_bytes(stream[4])
    (out / "chat_stream_http.txt").write_text(http_text(*stream[:4], b"(body in chat_stream.txt)"))
    bad_model = request(port, "POST", "/v1/chat/completions", {**chat_body("no-such-model", img, 4)})
    (out / "model_not_found.txt").write_text(http_text(*bad_model))


def collect_burst(srv: real.RealVllm, out: Path, burst: int = 16, max_tokens: int = 384) -> dict:
    """A burst past --max-num-queued-reqs: the 503s, and /metrics while running and waiting."""
    port = srv.port
    images = [png(f"Burst {i}") for i in range(burst)]
    results: list = [None] * burst

    def one(i: int) -> None:
        t0 = time.monotonic()
        r = request(port, "POST", "/v1/chat/completions", chat_body(srv.model, images[i], max_tokens))
        results[i] = (r, time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(burst)]
    for t in threads:
        t.start()
    snapshot, best = None, (-1.0, -1.0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(t.is_alive() for t in threads):
        text = request(port, "GET", "/metrics")[4].decode()
        running = metric(text, "vllm:num_requests_running")
        waiting = metric(text, "vllm:num_requests_waiting")
        rejected = metric(text, "vllm:admission_rejections_total")
        if running > 0 and waiting > 0 and rejected > 0 and (running, waiting) >= best:
            snapshot, best = text, (running, waiting)
            if running >= 4:
                break
        time.sleep(0.05)
    health_under_load = request(port, "GET", "/health")[0]
    for t in threads:
        t.join()
    if snapshot is None:
        raise RuntimeError("never saw running>0 and waiting>0 together")
    (out / "metrics.txt").write_text(snapshot)
    rejected = [(r, dt) for r, dt in results if r[0] == 503]
    ok = [(r, dt) for r, dt in results if r[0] == 200]
    if rejected:
        (status, reason, version, headers, raw), dt = rejected[0]
        sample = {
            "status_line": f"{version} {status} {reason}",
            "status": status,
            "reason": reason,
            "headers": [[k, v] for k, v in headers],
            "body": json.loads(raw),
            "body_raw": raw.decode(),
            "seconds_to_answer": round(dt, 3),
            "server_flags": "--max-num-seqs 4 --max-num-queued-reqs 8",
        }
        (out / "overloaded_503.json").write_text(json.dumps(sample, indent=2, ensure_ascii=False) + "\n")
    after = request(port, "GET", "/metrics")[4].decode()
    (out / "metrics_after_burst.txt").write_text(after)
    return {
        "burst": burst,
        "ok": len(ok),
        "rejected_503": len(rejected),
        "other": [r[0] for r, _ in results if r[0] not in (200, 503)],
        "max_running_waiting_seen": best,
        "seconds_to_503": sorted(round(dt, 3) for _, dt in rejected),
        "health_status_under_load": health_under_load,
        "rss_mb_under_load": group_rss_mb(os.getpgid(srv.process.pid)),
    }


def throughput(srv: real.RealVllm, count: int = 32, concurrency: int = 16, max_tokens: int = 64) -> dict:
    images = [png(f"Page {i} amount {i * 37}") for i in range(8)]
    # warm-up (first request pays one-off costs)
    request(srv.port, "POST", "/v1/chat/completions", chat_body(srv.model, images[0], 8))
    stats: list = []

    def one(i: int):
        t0 = time.monotonic()
        body = chat_body(srv.model, images[i % 8], max_tokens, return_token_ids=True)
        status, _, _, _, raw = request(srv.port, "POST", "/v1/chat/completions", body)
        answer = json.loads(raw)
        choice = answer["choices"][0] if status == 200 else {}
        text = (choice.get("message") or {}).get("content") or ""
        ids = choice.get("token_ids") or []
        distinct = len(set(ids)) / len(ids) if ids else 0.0
        return status, time.monotonic() - t0, answer.get("usage", {}).get("completion_tokens", 0), answer, text, distinct

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        stats = list(pool.map(one, range(count)))
    wall = time.monotonic() - t0
    tokens = sum(s[2] for s in stats)
    finish = {}
    for s in stats:
        if s[0] == 200:
            reason = s[3]["choices"][0]["finish_reason"]
            finish[reason] = finish.get(reason, 0) + 1
    lat = sorted(s[1] for s in stats)
    sample_text = stats[0][4]
    return {
        "requests": count,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "statuses": sorted({s[0] for s in stats}),
        "wall_s": round(wall, 2),
        "requests_per_s": round(count / wall, 2),
        "output_tokens_per_s": round(tokens / wall, 1),
        "completion_tokens_total": tokens,
        "finish_reasons": finish,
        "latency_p50_s": round(lat[len(lat) // 2], 2),
        "latency_max_s": round(lat[-1], 2),
        "sample_text": sample_text[:200],
        # distinct output token ids / output tokens, averaged: 1.0 = no token repeated
        "distinct_token_ratio_mean": round(sum(s[5] for s in stats) / len(stats), 3),
        "rss_mb": group_rss_mb(os.getpgid(srv.process.pid)),
        "pss_mb": group_rss_mb(os.getpgid(srv.process.pid), "Pss"),
    }


def preemption(srv: real.RealVllm, out: Path) -> dict:
    images = [png(f"Preempt {i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: request(srv.port, "POST", "/v1/chat/completions", chat_body(srv.model, images[i], 256))[0], range(8)))
    text = request(srv.port, "GET", "/metrics")[4].decode()
    (out / "metrics_preemption.txt").write_text(text)
    return {"statuses": statuses, "num_preemptions_total": metric(text, "vllm:num_preemptions_total")}


def timed_start(tmp: Path, **kw):
    t0 = time.monotonic()
    cm = real.real_vllm(tmp, **kw)
    srv = cm.__enter__()
    return cm, srv, round(time.monotonic() - t0, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "samples"))
    ap.add_argument("--only", choices=["samples", "bench", "preempt"], action="append")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["samples", "bench", "preempt"])
    meas_path = out / "measurements.json"
    meas = json.loads(meas_path.read_text()) if meas_path.exists() else {}
    t0 = time.monotonic()
    real.ensure_model()
    meas.setdefault("model_build_s_if_missing", round(time.monotonic() - t0, 1))
    tmp = Path(tempfile.mkdtemp(prefix="vllm-samples-"))

    def save():
        meas_path.write_text(json.dumps(meas, indent=2, ensure_ascii=False) + "\n")

    if "samples" in only:
        cm, srv, start = timed_start(tmp / "a", max_num_seqs=4, max_num_queued_reqs=8, no_repeat=True)
        try:
            meas["samples_server"] = {"startup_s": start, "rss_mb_idle": group_rss_mb(os.getpgid(srv.process.pid)),
                "pss_mb_idle": group_rss_mb(os.getpgid(srv.process.pid), "Pss"),
            }
            collect_basic(srv, out)
            meas["samples_server"]["burst"] = collect_burst(srv, out)
        finally:
            cm.__exit__(None, None, None)
        save()
        print(json.dumps(meas["samples_server"], indent=1))
    if "bench" in only:
        for no_repeat in (True, False):
            cm, srv, start = timed_start(tmp / f"b{int(no_repeat)}", max_num_seqs=4, no_repeat=no_repeat)
            try:
                key = "throughput_norepeat" if no_repeat else "throughput_plain"
                meas[key] = {"startup_s": start, **throughput(srv)}
            finally:
                cm.__exit__(None, None, None)
            save()
            print(key, json.dumps(meas[key], indent=1, ensure_ascii=False))
    if "preempt" in only:
        cm, srv, start = timed_start(tmp / "c", max_num_seqs=4, kv_cache_tokens=1024, no_repeat=True)
        try:
            meas["preemption"] = {"startup_s": start, "kv_cache_tokens": 1024, **preemption(srv, out)}
        finally:
            cm.__exit__(None, None, None)
        save()
        print(json.dumps(meas["preemption"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
