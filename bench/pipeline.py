"""Throughput of raw RapidOCR calls beside the same images through queue → workers → local sink.

    python bench/pipeline.py [--images 24] [--rounds 2]

All are measured in one run, in interleaved rounds (the best of each setting counts, so a noisy
neighbour hurts all alike), on generated screenshot-like images, fresh for every pipeline round so
the result cache never helps. Raw is the rapidocr package called as its users call it,
`RapidOCR()(image)` with its own defaults, measured two ways: one process with onnxruntime's
default threads, and one process per core with one thread each. The pipeline runs real `ocrhub
worker` processes on an embedded redis-server with the defaults `ocrhub up` uses, and is timed from
the first submit until the last result is in the local sink. Prints images/s, the ratio to the
best raw setting, and each setting's character error rate against the text drawn (tests/quality/cer.py),
so that speed is never bought with worse reading.
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

from dataclasses import dataclass  # noqa: E402

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from tests.quality.cer import Tally  # noqa: E402

WORDS = (
    "invoice total amount paid order shipping address customer receipt tax number date "
    "meeting agenda action owner deadline review release notes version build server queue "
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima"
).split()


def font(size: int) -> ImageFont.ImageFont:
    path = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    return ImageFont.truetype(str(path), size) if path.exists() else ImageFont.load_default(size=size)


@dataclass(frozen=True)
class Drawn:
    data: bytes  # a PNG
    truth: str  # its lines


@dataclass(frozen=True)
class Measured:
    images_per_second: float
    tally: Tally  # edits against the truth, over the images measured


def make_images(count: int, seed: int = 7) -> list[Drawn]:
    """Screenshot-like PNGs, 1080×720 with ten lines of words and numbers each."""
    rng = random.Random(seed)
    face = font(30)
    images = []
    for i in range(count):
        img = Image.new("RGB", (1080, 720), "white")
        draw = ImageDraw.Draw(img)
        lines = []
        for row in range(10):
            words = " ".join(rng.choice(WORDS) for _ in range(5))
            lines.append(f"{i:03d}-{row} {words} {rng.randint(100, 99999)}")
            draw.text((40, 30 + row * 68), lines[-1], fill="black", font=face)
        out = io.BytesIO()
        img.save(out, "PNG")
        images.append(Drawn(out.getvalue(), "\n".join(lines)))
    return images


_raw = None


def _init_raw(threads: int) -> None:
    global _raw
    from rapidocr import RapidOCR

    params: dict[str, object] = {"Global.log_level": "error"}
    if threads:
        params |= {"EngineConfig.onnxruntime.intra_op_num_threads": threads, "EngineConfig.onnxruntime.inter_op_num_threads": 1}
    _raw = RapidOCR(params=params)
    _raw(make_images(1, seed=0)[0].data)


def _read_raw(data: bytes) -> str:
    return "\n".join(_raw(data).txts or ())  # type: ignore[misc]


def raw_throughput(images: list[Drawn], processes: int, threads: int) -> Measured:
    with mp.get_context("spawn").Pool(processes, initializer=_init_raw, initargs=(threads,)) as pool:
        pool.map(_read_raw, [image.data for image in images[: processes * 2]], chunksize=1)  # warm every process
        started = time.perf_counter()
        texts = pool.map(_read_raw, [image.data for image in images], chunksize=1)
        elapsed = time.perf_counter() - started
    return Measured(len(images) / elapsed, Tally.total(Tally.of(i.truth, t) for i, t in zip(images, texts)))


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

    def throughput(self, images: list[Drawn]) -> Measured:
        from ocr_core.queue import submit_bytes
        from ocr_core.status import job_state

        baseline = self.store.count()
        started = time.perf_counter()
        jobs = [submit_bytes(self.conn, image.data, self.settings, source="bench") for image in images]
        while self.store.count() < baseline + len(jobs):
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        failed = [j for j in jobs if job_state(self.conn, j.job_id).status != "finished"]
        if failed:
            raise SystemExit(f"{len(failed)} pipeline jobs did not finish")
        texts = [self.store.get(job.job_id).text for job in jobs]  # type: ignore[union-attr]
        return Measured(len(images) / elapsed, Tally.total(Tally.of(i.truth, t) for i, t in zip(images, texts)))

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
    results: dict[str, list[Measured]] = {"raw-default": [], "raw-per-core": [], "pipeline": []}
    with Pipeline(workers, threads) as pipeline:
        pipeline.throughput(make_images(workers * 2, seed=99))  # warm the workers
        for round_ in range(args.rounds):
            results["raw-default"].append(raw_throughput(raw_images, 1, 0))
            results["raw-per-core"].append(raw_throughput(raw_images, cores, 1))
            # Fresh images every round: the result cache must not help the pipeline.
            results["pipeline"].append(pipeline.throughput(make_images(args.images, seed=100 + round_)))
            print(f"  round {round_ + 1}: " + ", ".join(f"{k} {v[-1].images_per_second:.2f}/s" for k, v in results.items()), flush=True)
    best = {name: max(m.images_per_second for m in values) for name, values in results.items()}
    rate = {name: Tally.total(m.tally for m in values).rate for name, values in results.items()}
    print(f"raw rapidocr, 1 process x default threads : {best['raw-default']:6.2f} images/s, CER {rate['raw-default']:.4f}")
    print(f"raw rapidocr, {cores} processes x 1 thread    : {best['raw-per-core']:6.2f} images/s, CER {rate['raw-per-core']:.4f}")
    print(
        f"pipeline, {workers} worker(s) x {threads or 'all'} thread(s)    : {best['pipeline']:6.2f} images/s, CER {rate['pipeline']:.4f}"
        " (queue -> workers -> local sink, the defaults of `ocrhub up`)"
    )
    best_raw_name = "raw-default" if best["raw-default"] >= best["raw-per-core"] else "raw-per-core"
    print(f"best raw setting: {best_raw_name}")
    print(f"ratio pipeline / best raw: {best['pipeline'] / best[best_raw_name]:.3f} (goal >= 1.5 at a CER no worse than {rate[best_raw_name]:.4f})")


if __name__ == "__main__":
    main()
