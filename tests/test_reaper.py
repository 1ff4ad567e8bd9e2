"""Handing back jobs nobody holds: a dead worker's, orphans of a dequeue, leftovers of a Redis crash."""

from __future__ import annotations

import os
import socket
import time

import redis
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from ocr_core import queue
from ocrhub.reaper import OrphanSweep, clear_stale_scheduler_locks, reap
from tests.test_worker import png

DEAD_PID = 2**22 + 4242  # above the default pid_max: never a live process


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


def queued_job(conn: redis.Redis, settings) -> Job:  # noqa: ANN001
    job = queue.submit_bytes(conn, png(), settings, source="test")
    return Job.fetch(queue.ocr_job_id(job.job_id), connection=conn, serializer=JSONSerializer)


def sweep_twice(sweep: OrphanSweep) -> tuple[list[str], list[str]]:
    first = sweep.run()
    time.sleep(sweep.grace)
    return first, sweep.run()


def test_a_job_dequeued_by_a_worker_that_died_before_starting_it_goes_back(conn: redis.Redis, settings) -> None:
    rq_job = queued_job(conn, settings)
    q = queue.ocr_queue(conn, settings)
    assert conn.lpop(q.key).decode() == rq_job.id  # BLPOP, then the worker is killed
    first, second = sweep_twice(OrphanSweep(conn, settings, grace=0.3))
    assert first == []  # a worker between dequeue and start looks the same: wait one grace
    assert second == [rq_job.id]
    assert q.job_ids == [rq_job.id]


def test_a_queued_job_left_in_the_started_registry_by_a_redis_crash_goes_back(conn: redis.Redis, settings) -> None:
    rq_job = queued_job(conn, settings)
    q = queue.ocr_queue(conn, settings)
    conn.lpop(q.key)
    conn.zadd(q.started_job_registry.key, {f"{rq_job.id}:exec-1": time.time() + 600})
    assert rq_job.get_status() == JobStatus.QUEUED
    _, second = sweep_twice(OrphanSweep(conn, settings, grace=0.3))
    assert second == [rq_job.id]
    assert q.job_ids == [rq_job.id]
    assert q.started_job_registry.get_job_ids() == []


def test_jobs_held_by_live_workers_or_still_queued_are_left_alone(conn: redis.Redis, settings) -> None:
    waiting = queued_job(conn, settings)
    running = queued_job(conn, settings)
    q = queue.ocr_queue(conn, settings)
    conn.lrem(q.key, 1, running.id)
    worker = SimpleWorker([q], connection=conn, name="alive-1")
    worker.register_birth()  # this very process: alive
    running.worker_name = "alive-1"
    running.set_status(JobStatus.STARTED)
    running.save()
    conn.zadd(q.started_job_registry.key, {f"{running.id}:exec-1": time.time() + 600})
    conn.sadd("rq:worker:alive-1:executions", f"{running.id}:exec-1")  # as RQ records an execution
    assert sweep_twice(OrphanSweep(conn, settings, grace=0.2)) == ([], [])
    assert q.job_ids == [waiting.id]
    # The same worker, started again after a Redis outage: alive, but no longer running that job.
    conn.delete("rq:worker:alive-1:executions")
    assert sweep_twice(OrphanSweep(conn, settings, grace=0.2))[1] == [running.id]
    worker.register_death()


def test_a_started_job_of_a_dead_process_goes_back_with_its_retry_counted(conn: redis.Redis, settings) -> None:
    rq_job = queued_job(conn, settings)
    q = queue.ocr_queue(conn, settings)
    conn.lrem(q.key, 1, rq_job.id)
    worker = SimpleWorker([q], connection=conn, name="gone-1")
    worker.register_birth()
    conn.hset(worker.key, "pid", DEAD_PID)
    rq_job.worker_name = "gone-1"
    rq_job.set_status(JobStatus.STARTED)
    rq_job.save()
    conn.zadd(q.started_job_registry.key, {f"{rq_job.id}:exec-1": time.time() + 600})
    _, second = sweep_twice(OrphanSweep(conn, settings, grace=0.2))
    assert second == [rq_job.id]
    assert rq_job.get_status(refresh=True) in (JobStatus.QUEUED, JobStatus.SCHEDULED)


def test_only_scheduler_locks_of_dead_local_processes_are_cleared(conn: redis.Redis) -> None:
    here = socket.gethostname()
    for name, host, pid in (("dead", here, DEAD_PID), ("alive", here, os.getpid()), ("elsewhere", "other-host", DEAD_PID)):
        conn.set(RQScheduler.get_locking_key(name), f"owner-{name}", ex=60)
        conn.hset(f"rq:scheduler:owner-{name}", mapping={"hostname": host, "pid": pid})
    assert clear_stale_scheduler_locks(conn, ["dead", "alive", "elsewhere", "none"]) == ["dead"]
    assert conn.get(RQScheduler.get_locking_key("alive")) == b"owner-alive"
    assert conn.get(RQScheduler.get_locking_key("elsewhere")) == b"owner-elsewhere"


def test_a_job_a_real_worker_is_reading_is_never_swept(conn: redis.Redis, settings, redis_server, tmp_path) -> None:
    import signal
    import subprocess
    import sys

    from ocr_core.status import job_state
    from tests import fakes
    from tests.hub_process import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
    env.update(OCRHUB_REDIS_URL=redis_server.url, OCRHUB_OCR_ENGINE="tests.fakes:HoldingEngine", OCRHUB_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    worker = subprocess.Popen([sys.executable, "-m", "ocrhub.cli", "worker", "--name", "reading"], env=env)
    try:
        deadline = time.monotonic() + 60
        while not SimpleWorker.all(connection=conn):  # registered: its warm-up reading is done
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.1)
        conn.set(fakes.HOLD_KEY, 1)
        job = queue.submit_bytes(conn, png(), settings, source="test")
        while job_state(conn, job.job_id).status != "started":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sweep = OrphanSweep(conn, settings, grace=0.3)
        assert sweep_twice(sweep) == ([], [])
        assert sweep.run() == []
        conn.delete(fakes.HOLD_KEY)
        while job_state(conn, job.job_id).status != "finished":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        conn.delete(fakes.HOLD_KEY)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)


def test_a_worker_gone_since_the_last_sweep_makes_the_next_one_look_at_every_job(conn: redis.Redis, settings) -> None:
    # The periodic sweep reads only the registries; a dequeued-never-started job is found by the full one.
    rq_job = queued_job(conn, settings)
    q = queue.ocr_queue(conn, settings)
    worker = SimpleWorker([q], connection=conn, name="vanishing")
    worker.register_birth()
    sweep = OrphanSweep(conn, settings, grace=0.2)
    assert sweep.run(scan_all=False) == []
    conn.lpop(q.key)  # dequeued, and then the worker died
    worker.register_death()
    assert sweep.run(scan_all=False) == []  # a suspect now
    time.sleep(0.3)
    assert sweep.run(scan_all=False) == [rq_job.id]
