"""Delivery jobs on a real Redis with burst workers: a retry still finds the image, and once every
delivery is done for good the image bytes leave Redis."""

from __future__ import annotations

import io
import json
import random
from typing import ClassVar
from urllib.parse import SplitResult

import pytest
import redis
from PIL import Image
from rq.registry import FailedJobRegistry

from ocr_core import queue, store
from ocr_core.job import OcrResult
from ocr_core.status import job_state
from ocrhub import metrics
from ocrhub.worker import build_worker
from sinks.base import SCHEMES, SinkContext, SinkError
from sinks.delivery import sink_label
from sinks.local import LocalStore

REFUSED_KEY = "test:image-sink:refused"
RECEIVED_KEY = "test:image-sink:received"


class ImageSink:
    """A sink that uploads the image, as Notion does: refuses (SinkError) the jobs listed in
    test:image-sink:refused, and records for the others which bytes it was handed."""

    scheme: ClassVar[str] = "test-image"
    needs_image: ClassVar[bool] = True

    def __init__(self, conn: redis.Redis) -> None:
        self.conn = conn

    @classmethod
    def from_url(cls, url: SplitResult, context: SinkContext) -> ImageSink:
        return cls(context.conn)

    def check(self) -> None:
        pass

    def url(self, privacy: bool = True) -> str:
        return "test-image://"

    def deliver(self, result: OcrResult, image: bytes | None) -> str:
        if self.conn.sismember(REFUSED_KEY, result.job.job_id):
            raise SinkError("the image service is down")
        self.conn.hset(RECEIVED_KEY, result.job.job_id, store.sha256(image) if image is not None else "no image")
        return "test-image"


@pytest.fixture
def image_sink(settings, set_env, monkeypatch):
    monkeypatch.setitem(SCHEMES, ImageSink.scheme, "tests.sinks.test_delivery:ImageSink")
    return set_env(ocr_engine="tests.fakes:CountingEngine", sinks=json.dumps({"kb": "test-image://"}), retry_intervals="3600")


def work(conn, settings) -> None:
    build_worker(conn, settings).work(burst=True, with_scheduler=True)


def run_retries_now(conn, rq_queue) -> None:
    registry = rq_queue.scheduled_job_registry
    for job_id in registry.get_job_ids():
        conn.zadd(registry.key, {job_id: 0})


def received(conn) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in conn.hgetall(RECEIVED_KEY).items()}


def deliveries(conn, sink: str, outcome: str) -> float:
    samples = {text: value for family in metrics.recorded(conn) for text, value in family.samples}
    return samples.get(metrics.series("ocrhub_deliveries_total", {"sink": sink, "outcome": outcome}), 0)


def png(width: int = 64, height: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, "PNG")
    return out.getvalue()


def noisy_png(seed: int, side: int = 1024) -> bytes:
    """About 3 MB that no compressor shrinks, like a phone photo."""
    image = Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=0)
    return out.getvalue()


def blob_keys(conn) -> list[str]:
    return sorted(k.decode() for k in conn.scan_iter(f"{store.PREFIX}:blob:*"))


def used_memory(conn) -> int:
    return int(conn.info("memory")["used_memory"])


def test_a_delivery_retried_later_still_finds_the_image_then_lets_it_go(conn, image_sink):
    data = png(90, 40)
    job = queue.submit_bytes(conn, data, image_sink, source="test", routes=("local", "kb"))
    conn.sadd(REFUSED_KEY, job.job_id)
    work(conn, image_sink)
    assert job_state(conn, job.job_id).status == "finished"
    assert LocalStore(image_sink.data_dir / "results.sqlite3").get(job.job_id) is not None
    # Read, and delivered to the sink that never looks at the image; the one that uploads it waits for its retry.
    assert {h.decode() for h in conn.smembers(store.holders_key(job.job_id))} == {store.delivery_holder("kb")}
    assert store.load_image(conn, job.job_id) == data
    assert deliveries(conn, "test-image", "retry") == 1

    conn.srem(REFUSED_KEY, job.job_id)
    run_retries_now(conn, queue.delivery_queue(conn, image_sink))
    work(conn, image_sink)
    assert received(conn) == {job.job_id: store.sha256(data)}
    assert blob_keys(conn) == []
    assert not conn.exists(store.holders_key(job.job_id))
    assert deliveries(conn, "test-image", "ok") == 1
    assert deliveries(conn, "local", "ok") == 1


def test_a_delivery_that_fails_for_good_keeps_the_image_only_a_bounded_while(conn, image_sink, set_env):
    settings = set_env(retry_intervals="0,0", failed_blob_ttl="900")
    job = queue.submit_bytes(conn, png(), settings, source="test", routes=("kb",))
    conn.sadd(REFUSED_KEY, job.job_id)
    work(conn, settings)
    failed = FailedJobRegistry(queue=queue.delivery_queue(conn, settings)).get_job_ids()
    assert failed == [queue.delivery_job_id(job.job_id, "kb")]
    # An admin may requeue it for a while (it uploads the image); after that the bytes go.
    assert store.load_image(conn, job.job_id) == png()
    assert 0 < conn.ttl(store.blob_key(job.job_id)) <= 900
    assert deliveries(conn, "test-image", "retry") == 2
    assert deliveries(conn, "test-image", "failed") == 1


def test_no_delivery_holds_the_bytes_of_an_unreadable_image(conn, image_sink, set_env):
    settings = set_env(failed_blob_ttl="300")
    job = queue.submit_bytes(conn, b"%PDF-1.7 not an image", settings, source="test", routes=("kb",))
    work(conn, settings)
    assert received(conn) == {job.job_id: "no image"}  # the sink hears why, and needs no image for that
    assert not conn.exists(store.holders_key(job.job_id))
    assert 0 < conn.ttl(store.blob_key(job.job_id)) <= 300  # kept only for the failed reading's requeue


def test_fifty_large_uploads_leave_no_image_bytes_once_delivered(conn, image_sink):
    baseline = used_memory(conn)
    jobs = [queue.submit_bytes(conn, noisy_png(n), image_sink, source="test", routes=("local", "kb")) for n in range(50)]
    waiting = jobs[7]
    conn.sadd(REFUSED_KEY, waiting.job_id)
    uploaded = used_memory(conn) - baseline
    assert uploaded > 50 * 3_000_000
    work(conn, image_sink)

    assert all(job_state(conn, job.job_id).status == "finished" for job in jobs)
    assert len(received(conn)) == 49
    # Only the image whose delivery waits for a retry is still in Redis, and whole.
    assert blob_keys(conn) == [store.blob_key(waiting.job_id)]
    assert store.load_image(conn, waiting.job_id) == noisy_png(7)
    assert used_memory(conn) - baseline < len(noisy_png(7)) + 2_000_000

    conn.srem(REFUSED_KEY, waiting.job_id)
    run_retries_now(conn, queue.delivery_queue(conn, image_sink))
    work(conn, image_sink)
    assert received(conn)[waiting.job_id] == store.sha256(noisy_png(7))
    assert blob_keys(conn) == []
    assert used_memory(conn) - baseline < 2_000_000


def test_sinks_are_counted_by_scheme_whatever_they_are_named(settings, set_env):
    settings = set_env(sinks=json.dumps({"team-kb": "notion://secret@0123456789abcdef0123456789abcdef", "archive": "local:///tmp/a.sqlite3"}))
    assert sink_label("team-kb", settings) == "notion"
    assert sink_label("archive", settings) == "local"
    assert sink_label("feishu-reply", settings) == "feishu-reply"
    assert sink_label("nosuch://x", settings) == "unknown"
    assert sink_label("misspelt", settings) == "unknown"
