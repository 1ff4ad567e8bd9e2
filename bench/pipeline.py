"""Throughput of raw RapidOCR calls beside the same images through queue → workers → local sink.

    python bench/pipeline.py [--images 24] [--processes N]

Both are measured in one run on the same generated images (each distinct, so the result cache
never helps the pipeline). Raw is measured two ways, as the machine allows: one process with
onnxruntime's default threads, and one process per core with one thread each; the pipeline runs
real `ocrhub worker` processes on an embedded redis-server. Prints images/s and the ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import io  # noqa: E402

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

WORDS = (
    "invoice total amount paid order shipping address customer receipt tax number date "
    "meeting agenda action owner deadline review release notes version build server queue "
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima"
).split()


def font(size: int) -> ImageFont.ImageFont:
    path = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size=size)


def make_images(count: int, seed: int = 7) -> list[bytes]:
    """Screenshot-like PNGs, 1080×720 with ten lines of words and numbers each."""
    rng = random.Random(seed)
    face = font(30)
    images = []
    for i in range(count):
        img = Image.new("RGB", (1080, 720), "white")
        draw = ImageDraw.Draw(img)
        for row in range(10):
            words = " ".join(rng.choice(WORDS) for _ in range(5))
            draw.text((40, 30 + row * 68), f"{i:03d}-{row} {words} {rng.randint(100, 99999)}", fill="black", font=face)
        out = io.BytesIO()
        img.save(out, "PNG")
        images.append(out.getvalue())
    return images


_engine = None


def _init_worker(threads: int) -> None:
    global _engine
    from ocr_core.engines.rapidocr import RapidOcrEngine

    _engine = RapidOcrEngine(threads=threads)
    _engine.recognise(Image.new("RGB", (200, 60), "white"))


def _recognise(data: bytes) -> int:
    return len(_engine.recognise(Image.open(io.BytesIO(data)).convert("RGB")))  # type: ignore[union-attr]


def raw_throughput(images: list[bytes], processes: int, threads: int) -> float:
    with mp.get_context("spawn").Pool(processes, initializer=_init_worker, initargs=(threads,)) as pool:
        pool.map(_recognise, images[: processes * 2], chunksize=1)  # warm every process
        started = time.perf_counter()
        pool.map(_recognise, images, chunksize=1)
        return len(images) / (time.perf_counter() - started)


def pipeline_throughput(warmup: list[bytes], images: list[bytes], workers: int, threads: int) -> float:
    import redis
    from rq import Worker

    from ocr_core.queue import submit_bytes
    from ocr_core.status import job_state
    from ocrhub.redis_server import EmbeddedRedis
    from ocrhub.settings import load_settings
    from sinks.local import LocalStore

    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as server:
        env = {
            **os.environ,
            "OCRHUB_REDIS_URL": server.url,
            "OCRHUB_DATA_DIR": tmp,
            "OCRHUB_WORKERS": str(workers),
            "OCRHUB_ENGINE_THREADS": str(threads),
            "OCRHUB_LOG_LEVEL": "WARNING",
        }
        settings = load_settings(redis_url=server.url, data_dir=Path(tmp), workers=workers, engine_threads=threads)
        conn = redis.Redis.from_url(server.url)
        procs = [
            subprocess.Popen([sys.executable, "-m", "ocrhub.cli", "worker"], env=env, stdout=subprocess.DEVNULL)
            for _ in range(workers)
        ]
        try:
            while Worker.count(connection=conn) < workers:  # a worker registers once its engine is loaded
                time.sleep(0.1)
            warm = [submit_bytes(conn, data, settings, source="bench") for data in warmup]
            while not all(job_state(conn, j.job_id).done for j in warm):
                time.sleep(0.05)
            store = LocalStore(Path(tmp) / "results.sqlite3")
            baseline = store.count()
            started = time.perf_counter()
            jobs = [submit_bytes(conn, data, settings, source="bench") for data in images]
            while store.count() < baseline + len(jobs):
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
            failed = [j for j in jobs if job_state(conn, j.job_id).status != "finished"]
            if failed:
                raise SystemExit(f"{len(failed)} pipeline jobs did not finish")
            return len(images) / elapsed
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="processes for the one-per-core setting")
    args = parser.parse_args()
    cores = args.processes
    warm_extra = max(2, cores) * 2
    images = make_images(args.images + warm_extra)
    warmup, measured = images[: warm_extra], images[warm_extra:]

    print(f"{len(measured)} distinct 1080x720 images, {os.cpu_count()} cores", flush=True)
    raw_default = raw_throughput(measured, 1, 0)
    print(f"raw rapidocr, 1 process x default threads : {raw_default:6.2f} images/s", flush=True)
    raw_per_core = raw_throughput(measured, cores, 1)
    print(f"raw rapidocr, {cores} processes x 1 thread    : {raw_per_core:6.2f} images/s", flush=True)
    best_name, best = max((("1 process x default threads", raw_default), (f"{cores} processes x 1 thread", raw_per_core)), key=lambda x: x[1])
    workers, threads = (cores, 1) if best_name.startswith(str(cores)) else (1, 0)
    pipe = pipeline_throughput(warmup, measured, workers, threads)
    print(f"pipeline, {workers} worker(s) x {threads or 'default'} thread(s)   : {pipe:6.2f} images/s (queue -> workers -> local sink)")
    print(f"best raw setting: {best_name}")
    print(f"ratio pipeline / best raw: {pipe / best:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
