"""The queue end to end on a real redis-server with burst workers: payloads, retries, failures, the cache."""

from __future__ import annotations

import io
import json
import zlib

import pytest
from PIL import Image
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from ocr_core import queue, store
from ocr_core.errors import TransientError
from ocr_core.job import ImageJob, Line
from ocr_core.status import job_state
from ocrhub import metrics
from ocrhub.worker import build_worker
from sinks.local import LocalStore
from tests import fakes


def png(width: int = 64, height: int = 32, colour: str = "white") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def counting(settings, set_env):
    return set_env(ocr_engine="tests.fakes:CountingEngine")


def work(conn, settings) -> None:
    build_worker(conn, settings).work(burst=True, with_scheduler=True)


def run_retries_now(conn, rq_queue) -> None:
    """Make every retry scheduled on `rq_queue` due now (the next burst worker's scheduler queues it)."""
    registry = rq_queue.scheduled_job_registry
    for job_id in registry.get_job_ids():
        conn.zadd(registry.key, {job_id: 0})


def recorded(conn) -> dict[str, float]:
    return {text: value for family in metrics.recorded(conn) for text, value in family.samples}


STUMBLES_KEY = "test:stumbles"


class StumblingEngine(fakes.CountingEngine):
    """Fails its first read as a model server that blinked would (TransientError), then reads."""

    name = "stumbling"

    def recognise(self, image: Image.Image) -> list[Line]:
        if self.conn.incr(STUMBLES_KEY) == 1:
            raise TransientError("the engine blinked")
        return super().recognise(image)


def test_payload_is_json_and_names_the_function(conn, counting):
    job = queue.submit_bytes(conn, png(), counting, source="test")
    raw = conn.hget(f"rq:job:{queue.ocr_job_id(job.job_id)}", "data")
    func, _instance, args, _kwargs = json.loads(zlib.decompress(raw))  # RQ compresses; JSON inside, no pickle
    assert func == "ocr_core.pipeline.process"
    assert args[0]["blob"] == store.blob_key(job.job_id)
    assert ImageJob.from_dict(args[0]) == job


def test_image_goes_through_worker_to_local_sink(conn, counting):
    job = queue.submit_bytes(conn, png(80, 40), counting, source="test")
    work(conn, counting)
    state = job_state(conn, job.job_id)
    assert state.status == "finished"
    assert state.result is not None and state.result.text == "size 80x40"
    stored = LocalStore(counting.data_dir / "results.sqlite3").get(job.job_id)
    assert stored is not None and stored.text == "size 80x40"
    assert stored.image_sha256 == store.sha256(png(80, 40))


def test_same_bytes_twice_reuses_the_cached_result(conn, counting):
    first = queue.submit_bytes(conn, png(90, 30), counting, source="test")
    work(conn, counting)
    second = queue.submit_bytes(conn, png(90, 30), counting, source="test")
    third = queue.submit_bytes(conn, png(91, 30), counting, source="test")
    work(conn, counting)
    assert int(conn.get(fakes.COUNTER_KEY)) == 2
    assert job_state(conn, second.job_id).result.text == job_state(conn, first.job_id).result.text
    assert job_state(conn, third.job_id).result.text == "size 91x30"
    rows = LocalStore(counting.data_dir / "results.sqlite3").by_image(store.sha256(png(90, 30)))
    assert [r.job_id for r in rows] == [first.job_id, second.job_id]


def flaky_job(failures: int) -> ImageJob:
    return ImageJob(platform="flaky", bot_id="b", chat_id="c", message_id=f"m{failures}", image_key=f"{failures}:img")


def test_transient_failures_are_retried_without_the_sender(conn, counting, monkeypatch):
    monkeypatch.setitem(__import__("ocr_core.sources").sources.FETCHERS, "flaky", "tests.fakes:flaky_fetch")
    conn.set("test:image", png(70, 20))
    job = flaky_job(failures=2)
    queue.enqueue_image(conn, job, counting)
    work(conn, counting)
    assert job_state(conn, job.job_id).status == "finished"
    assert int(conn.get(f"{fakes.FLAKY_KEY}:{job.job_id}")) == 3
    # Read and delivered: nothing needs the bytes any more.
    assert store.load_image(conn, job.job_id) is None


def test_a_reading_retried_later_finds_the_stored_bytes_without_asking_the_platform(conn, settings, set_env, monkeypatch):
    monkeypatch.setitem(__import__("ocr_core.sources").sources.FETCHERS, "flaky", "tests.fakes:flaky_fetch")
    settings = set_env(ocr_engine="tests.ocr_core.test_queue:StumblingEngine", retry_intervals="3600")
    conn.set("test:image", png(70, 20))
    job = flaky_job(failures=0)
    queue.enqueue_image(conn, job, settings)
    work(conn, settings)
    assert job_state(conn, job.job_id).status == "scheduled"
    assert store.load_image(conn, job.job_id) == png(70, 20)
    run_retries_now(conn, queue.ocr_queue(conn, settings))
    work(conn, settings)
    assert job_state(conn, job.job_id).status == "finished"
    assert int(conn.get(f"{fakes.FLAKY_KEY}:{job.job_id}")) == 1
    assert store.load_image(conn, job.job_id) is None
    seen = recorded(conn)
    assert seen[metrics.series("ocrhub_ocr_total", {"engine": "stumbling", "outcome": "error"})] == 1
    assert seen[metrics.series("ocrhub_ocr_total", {"engine": "stumbling", "outcome": "ok"})] == 1


def test_exhausted_retries_land_in_failed_registry_with_reason(conn, counting, monkeypatch):
    monkeypatch.setitem(__import__("ocr_core.sources").sources.FETCHERS, "flaky", "tests.fakes:flaky_fetch")
    job = flaky_job(failures=10)
    queue.enqueue_image(conn, job, counting)
    work(conn, counting)
    attempts = int(conn.get(f"{fakes.FLAKY_KEY}:{job.job_id}"))
    assert attempts == 1 + len(counting.retry_intervals)
    registry = FailedJobRegistry(queue=queue.ocr_queue(conn, counting))
    assert registry.get_job_ids() == [queue.ocr_job_id(job.job_id)]
    state = job_state(conn, job.job_id)
    assert state.status == "failed"
    assert "platform briefly unavailable" in state.error


def test_unreadable_image_fails_at_once_and_sinks_hear_why(conn, counting):
    job = queue.submit_bytes(conn, b"%PDF-1.7 not an image", counting, source="test")
    work(conn, counting)
    rq_job = Job.fetch(queue.ocr_job_id(job.job_id), connection=conn, serializer=JSONSerializer)
    assert rq_job.get_status() == "failed"
    assert rq_job.retries_left == 0  # permanent: no retry was spent on it
    state = job_state(conn, job.job_id)
    assert "PDF" in state.error
    stored = LocalStore(counting.data_dir / "results.sqlite3").get(job.job_id)
    assert stored is not None and "PDF" in stored.error and stored.text == ""
    assert conn.get(fakes.COUNTER_KEY) is None


def test_a_reading_that_failed_for_good_keeps_its_bytes_only_a_bounded_while(conn, counting, set_env):
    settings = set_env(ocr_engine="tests.fakes:CountingEngine", failed_blob_ttl="600")
    job = queue.submit_bytes(conn, b"%PDF-1.7 not an image", settings, source="test")
    work(conn, settings)
    assert job_state(conn, job.job_id).status == "failed"
    # An admin may requeue it for a while; after that the bytes go, long before blob_ttl.
    assert store.load_image(conn, job.job_id) == b"%PDF-1.7 not an image"
    assert 0 < conn.ttl(store.blob_key(job.job_id)) <= 600
    assert recorded(conn)[metrics.series("ocrhub_ocr_total", {"engine": "counting", "outcome": "image_error"})] == 1


def test_each_reading_is_timed_and_counted_by_the_engine_that_read_it(conn, counting):
    queue.submit_bytes(conn, png(80, 40), counting, source="test")
    queue.submit_bytes(conn, png(81, 40), counting, source="test")
    queue.submit_bytes(conn, png(80, 40), counting, source="test")  # cached: no reading
    work(conn, counting)
    seen = recorded(conn)
    assert seen[metrics.series("ocrhub_ocr_total", {"engine": "counting", "outcome": "ok"})] == 2
    assert seen['ocrhub_ocr_seconds_count{engine="counting"}'] == 2
    assert 0 < seen['ocrhub_ocr_seconds_sum{engine="counting"}'] < 10


def test_missing_image_with_no_fetcher_fails_with_a_reason(conn, counting):
    job = ImageJob(platform="nowhere", bot_id="b", chat_id="c", message_id="m", image_key="k")
    queue.enqueue_image(conn, job, counting)
    work(conn, counting)
    state = job_state(conn, job.job_id)
    assert state.status == "failed"
    assert "no fetcher" in state.error


def test_each_route_gets_its_own_delivery_job(conn, counting, set_env, tmp_path):
    settings = set_env(
        ocr_engine="tests.fakes:CountingEngine",
        sinks=json.dumps({"archive": f"local://{tmp_path}/archive.sqlite3", "broken": "nosuch://x"}),
        routes=json.dumps({"upload:test": ["local", "broken", "archive"]}),
    )
    job = queue.submit_bytes(conn, png(50, 50), settings, source="test")
    work(conn, settings)
    assert LocalStore(settings.data_dir / "results.sqlite3").get(job.job_id) is not None
    assert LocalStore(tmp_path / "archive.sqlite3").get(job.job_id) is not None
    failed = FailedJobRegistry(queue=queue.delivery_queue(conn, settings)).get_job_ids()
    assert failed == [queue.delivery_job_id(job.job_id, "broken")]
