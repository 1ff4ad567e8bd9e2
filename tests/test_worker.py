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
from ocrhub.worker import run_worker, warm_up
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


def test_a_job_naming_any_other_function_is_refused_not_run(conn: redis.Redis, settings, tmp_path) -> None:
    # What anyone with write access to Redis could queue: before the allow-list, it ran.
    marker = tmp_path / "pwned"
    q = queue.ocr_queue(conn, settings)
    evil = q.enqueue_call("os.system", args=(f"touch {marker}",), job_id="evil")
    run_worker(conn, settings, burst=True)
    assert not marker.exists()
    evil = Job.fetch("evil", connection=conn, serializer=JSONSerializer)
    assert evil.get_status() == "failed"
    assert "refused to run 'os.system'" in evil.latest_result().exc_string


PLANTED = []


def planted_callback(*args: object) -> None:
    PLANTED.append(args)


def test_a_callback_named_in_a_job_is_never_imported(conn: redis.Redis, settings) -> None:
    job = queue.submit_bytes(conn, png(), settings, source="test")
    rq_id = queue.ocr_job_id(job.job_id)
    conn.hset(f"rq:job:{rq_id}", "success_callback_name", "tests.test_worker.planted_callback")
    assert Job.fetch(rq_id, connection=conn, serializer=JSONSerializer)._success_callback_name  # RQ reads it
    run_worker(conn, settings, burst=True)
    assert job_state(conn, job.job_id).status == "finished"
    assert PLANTED == []


def test_scheduled_retries_run_on_time_though_a_dead_process_held_the_scheduler_lock(conn: redis.Redis, settings) -> None:
    from datetime import timedelta

    from rq.scheduler import RQScheduler

    from ocrhub.worker import Scheduler

    q = queue.ocr_queue(conn, settings)
    # As an unclean stop leaves it: the lock and its holder's record, the holder gone.
    conn.set(RQScheduler.get_locking_key(q.name), "gone", ex=60)
    conn.hset("rq:scheduler:gone", mapping={"hostname": __import__("socket").gethostname(), "pid": 2**22 + 12345})
    job = q.enqueue_in(timedelta(seconds=1), "ocr_core.pipeline.process", job_id="later")
    scheduler = Scheduler(conn, settings, "sched-test").start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and job.id not in q.job_ids:
            time.sleep(0.1)
        assert job.id in q.job_ids  # RQ's own scheduler would wait for its ten-minute maintenance
    finally:
        scheduler.close()
    assert conn.get(RQScheduler.get_locking_key(q.name)) is None  # released at close


def test_the_scheduler_holder_sweeps_for_jobs_nobody_holds(conn: redis.Redis, settings) -> None:
    # Without `ocrhub up` (compose, several machines) no hub sweeps: the workers do it themselves.
    from ocrhub.worker import Scheduler

    job = queue.submit_bytes(conn, png(), settings, source="test")
    q = queue.ocr_queue(conn, settings)
    conn.lpop(q.key)  # dequeued by a worker that died before starting it
    scheduler = Scheduler(conn, settings, "sweeper")
    scheduler.SWEEP_EVERY = 0.2
    scheduler.sweep.grace = 0.5
    scheduler.next_sweep = scheduler.next_full_sweep = 0.0
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while q.job_ids != [queue.ocr_job_id(job.job_id)]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        scheduler.close()
