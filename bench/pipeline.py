"""Throughput of raw RapidOCR calls beside the same images through queue → workers → local sink.

    python bench/pipeline.py [--images 24] [--rounds 2]

All are measured in one run, in interleaved rounds (the best of each setting counts, so a noisy
neighbour hurts all alike), on generated screenshot-like images, fresh for every pipeline round so
the result cache never helps. Raw is measured two ways: one process with onnxruntime's default
threads, and one process per core with one thread each. The pipeline runs real `ocrhub worker`
processes on an embedded redis-server with the defaults `ocrhub up` uses, and is timed from the
first submit until the last result is in the local sink. Prints images/s and the ratio.
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


class Pipeline:
    """An embedded redis-server and real `ocrhub worker` processes, configured as `ocrhub up` would be."""

    def __init__(self, workers: int, threads: int) -> None:
        self.workers, self.threads = workers, threads

    def __enter__(self) -> Pipeline:
        import redis
        from rq import Worker

        from ocrhub.redis_server import EmbeddedRedis
        from ocrhub.settings import load_settings
        from sinks.local import LocalStore

        self.tmp = tempfile.TemporaryDirectory()
        self.server = EmbeddedRedis(Path(self.tmp.name) / "redis").start()
        env = {
            **os.environ,
            "OCRHUB_REDIS_URL": self.server.url,
            "OCRHUB_DATA_DIR": self.tmp.name,
            "OCRHUB_WORKERS": str(self.workers),
            "OCRHUB_ENGINE_THREADS": str(self.threads),
            "OCRHUB_LOG_LEVEL": "WARNING",
        }
        self.settings = load_settings(redis_url=self.server.url, data_dir=Path(self.tmp.name), workers=self.workers, engine_threads=self.threads)
        self.conn = redis.Redis.from_url(self.server.url)
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "ocrhub.cli", "worker"], env=env, stdout=subprocess.DEVNULL)
            for _ in range(self.workers)
        ]
        while Worker.count(connection=self.conn) < self.workers:  # a worker registers once warmed up
            time.sleep(0.1)
        self.store = LocalStore(Path(self.tmp.name) / "results.sqlite3")
        return self

    def throughput(self, images: list[bytes]) -> float:
        from ocr_core.queue import submit_bytes
        from ocr_core.status import job_state

        baseline = self.store.count()
        started = time.perf_counter()
        jobs = [submit_bytes(self.conn, data, self.settings, source="bench") for data in images]
        while self.store.count() < baseline + len(jobs):
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        failed = [j for j in jobs if job_state(self.conn, j.job_id).status != "finished"]
        if failed:
            raise SystemExit(f"{len(failed)} pipeline jobs did not finish")
        return len(images) / elapsed

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(30)
        self.server.stop()
        self.tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="images per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each setting counts")
    args = parser.parse_args()

    from ocrhub.settings import load_settings

    defaults = load_settings()
    workers, threads = defaults.worker_count, defaults.threads_per_engine
    cores = os.cpu_count() or 1
    raw_images = make_images(args.images, seed=1)
    print(f"{args.images} distinct 1080x720 images per measurement, {cores} cores, {args.rounds} interleaved rounds", flush=True)
    results: dict[str, list[float]] = {"raw-default": [], "raw-per-core": [], "pipeline": []}
    with Pipeline(workers, threads) as pipeline:
        pipeline.throughput(make_images(workers * 2, seed=99))  # warm the workers
        for round_ in range(args.rounds):
            results["raw-default"].append(raw_throughput(raw_images, 1, 0))
            results["raw-per-core"].append(raw_throughput(raw_images, cores, 1))
            # Fresh images every round: the result cache must not help the pipeline.
            results["pipeline"].append(pipeline.throughput(make_images(args.images, seed=100 + round_)))
            print(f"  round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}/s" for k, v in results.items()), flush=True)
    best = {name: max(values) for name, values in results.items()}
    print(f"raw rapidocr, 1 process x default threads : {best['raw-default']:6.2f} images/s")
    print(f"raw rapidocr, {cores} processes x 1 thread    : {best['raw-per-core']:6.2f} images/s")
    print(f"pipeline, {workers} worker(s) x {threads or 'all'} thread(s)    : {best['pipeline']:6.2f} images/s (queue -> workers -> local sink, the defaults of `ocrhub up`)")
    best_raw_name = "1 process x default threads" if best["raw-default"] >= best["raw-per-core"] else f"{cores} processes x 1 thread"
    best_raw = max(best["raw-default"], best["raw-per-core"])
    print(f"best raw setting: {best_raw_name}")
    print(f"ratio pipeline / best raw: {best['pipeline'] / best_raw:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
