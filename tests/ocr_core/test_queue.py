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
from ocr_core.job import ImageJob
from ocr_core.status import job_state
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
    # The bytes are kept, so a later retry or re-delivery never asks the platform again.
    assert store.load_image(conn, job.job_id) == png(70, 20)


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
