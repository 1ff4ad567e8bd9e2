"""Worker processes: thread workers for engines that wait on the network, deferral without spending retries, reaping."""

from __future__ import annotations

import io
import time

import redis
from PIL import Image
from rq import SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from ocr_core import queue
from ocr_core.status import job_state
from ocrhub.worker import reap, run_worker, warm_up
from tests import fakes


def png(width: int = 64, height: int = 32) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, "PNG")
    return out.getvalue()


def test_one_process_keeps_several_requests_in_flight(conn: redis.Redis, settings, set_env) -> None:
    settings = set_env(ocr_engine="tests.fakes:SlowPageEngine", worker_threads="4")
    jobs = [queue.submit_bytes(conn, png(60 + i, 30), settings, source="test") for i in range(8)]
    warm_up(settings)  # SDK imports, paid once per process
    started = time.monotonic()
    run_worker(conn, settings, burst=True, name="threads-test")
    elapsed = time.monotonic() - started
    assert all(job_state(conn, job.job_id).status == "finished" for job in jobs)
    assert int(conn.get(fakes.PEAK_KEY)) >= 3
    assert elapsed < 8 * 0.4  # one at a time would take 3.2 s of reading alone
    names = {w.name for w in SimpleWorker.all(connection=conn)}
    assert not names  # every thread worker left cleanly


def test_a_deferred_job_runs_later_without_spending_a_retry(conn: redis.Redis, settings, set_env) -> None:
    settings = set_env(ocr_engine="tests.fakes:DeferringEngine", retry_intervals="5,5")
    job = queue.submit_bytes(conn, png(), settings, source="test")
    rq_id = queue.ocr_job_id(job.job_id)
    run_worker(conn, settings, burst=True)
    rq_job = Job.fetch(rq_id, connection=conn, serializer=JSONSerializer)
    assert rq_job.get_status() == "scheduled"
    assert rq_job.retries_left == 2
    for _ in range(2):
        time.sleep(1.1)
        run_worker(conn, settings, burst=True)  # its scheduler moves the due job back to the queue
    state = job_state(conn, job.job_id)
    assert state.status == "finished", state
    assert Job.fetch(rq_id, connection=conn, serializer=JSONSerializer).retries_left == 2
    assert state.result is not None and state.result.engine == "tests.fakes:DeferringEngine"


def test_reap_hands_back_the_jobs_of_every_thread_of_a_dead_process(conn: redis.Redis, settings, set_env) -> None:
    settings = set_env(ocr_engine="tests.fakes:CountingEngine")
    job = queue.submit_bytes(conn, png(), settings, source="test")
    q = queue.ocr_queue(conn, settings)
    rq_job = q.fetch_job(queue.ocr_job_id(job.job_id))
    # As a thread worker of process "dead-1" leaves it when killed mid-job.
    q.remove(rq_job.id)
    rq_job.worker_name = "dead-1.3"
    rq_job.set_status("started")
    rq_job.save()
    conn.zadd(q.started_job_registry.key, {f"{rq_job.id}:execution": time.time() + 600})
    assert reap(conn, settings, "dead-1") == [rq_job.id]
    assert reap(conn, settings, "dead-10") == []
