"""Jobs that nobody holds any more, handed back: a dead worker's, and orphans no worker ever started.

RQ finds a dead worker's jobs only after their timeout, and never finds two kinds of orphans:
a job a worker dequeued (BLPOP over several queues) and died before starting, and a job left in a
started registry with another status when Redis died between two writes. The hub runs these
after a worker dies, after Redis restarts, at start, and every little while.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable

import redis
from rq import SimpleWorker
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from ocr_core.queue import all_queues
from ocrhub.redis_server import pid_alive
from ocrhub.settings import Settings

log = logging.getLogger(__name__)


def reap(conn: redis.Redis, settings: Settings, worker_name: str) -> list[str]:
    """After a worker died without saying so (SIGKILL, OOM): retry its jobs now, free its name.

    Returns the ids of the jobs handed back to their queues (or to the failed registry when
    no retries were left).
    """
    from ocrhub.worker import stop_retrying_permanent_errors

    reaped = []
    for queue in all_queues(conn, settings):
        registry = queue.started_job_registry
        in_queue = []
        for entry in conn.zrange(registry.key, 0, -1):
            job_id = registry.parse_job_id(entry.decode())
            job = queue.fetch_job(job_id)
            if job is not None and _same_process(job.worker_name, worker_name) and job.get_status() == JobStatus.STARTED:
                conn.zadd(registry.key, {entry: 0}, xx=True)  # expired now: cleanup() retries it
                in_queue.append(job_id)
        if in_queue:
            registry.cleanup(exception_handlers=[stop_retrying_permanent_errors])
        reaped += in_queue
    for dead in SimpleWorker.all(connection=conn):
        if _same_process(dead.name, worker_name):
            dead.register_death()
    if reaped:
        log.warning("worker %s died; its jobs go back to the queue: %s", worker_name, ", ".join(reaped))
    return reaped


def _same_process(name: str | None, worker_name: str) -> bool:
    """`worker_name` or one of its thread workers (`<worker_name>.<n>`)."""
    return bool(name) and (name == worker_name or name.startswith(worker_name + "."))


def reap_stale(conn: redis.Redis, settings: Settings) -> list[str]:
    """Workers of this machine that RQ still lists but whose process is gone (a hub killed outright)."""
    reaped = []
    for worker in SimpleWorker.all(connection=conn):
        if _dead_here(worker.hostname, worker.pid) and "." not in worker.name:
            reaped += reap(conn, settings, worker.name)
    return reaped


def _dead_here(hostname: str | None, pid: int | None) -> bool:
    return hostname == socket.gethostname() and bool(pid) and not pid_alive(int(pid))  # type: ignore[arg-type]


def clear_stale_scheduler_locks(conn: redis.Redis, queue_names: Iterable[str]) -> list[str]:
    """Scheduler locks whose holder was a process of this machine that is gone.

    A lock outlives a killed scheduler by a minute, and RQ's own schedulers only try again at
    their ten-minute maintenance: scheduled retries would be late with nothing in the log."""
    cleared = []
    for name in queue_names:
        key = RQScheduler.get_locking_key(name)
        owner = conn.get(key)
        if owner is None:
            continue
        hostname, pid = (v.decode() if v else "" for v in conn.hmget(f"rq:scheduler:{owner.decode()}", "hostname", "pid"))
        if _dead_here(hostname, int(pid) if pid.isdigit() else 0):
            # Compare-and-delete: a lock that a live scheduler took meanwhile stays.
            if conn.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0", 1, key, owner):
                cleared.append(name)
    if cleared:
        log.info("cleared scheduler locks of stopped processes: %s", ", ".join(cleared))
    return cleared


class OrphanSweep:
    """Finds jobs that no live worker holds and that are in no queue, and hands them back.

    A job is touched only when it looked orphaned on two sweeps at least `grace` seconds apart:
    between a worker's dequeue and its start, a job is briefly in no queue and no registry."""

    def __init__(self, conn: redis.Redis, settings: Settings, grace: float = 10.0) -> None:
        self.conn = conn
        self.settings = settings
        self.grace = grace
        self.suspects: dict[str, tuple[float, bytes]] = {}  # job id → (first seen, status then)
        self.workers_seen: set[str] = set()

    def run(self, *, scan_all: bool = True) -> list[str]:
        """One sweep; `scan_all` also looks at every job key (for jobs dequeued and never started),
        as does any sweep that finds a worker gone since the last one, or suspects to look at again."""
        now = time.monotonic()
        queues = all_queues(self.conn, self.settings)
        live = self._live_workers()
        scan_all = scan_all or bool(self.workers_seen - live) or bool(self.suspects)
        self.workers_seen = live
        seen: dict[str, bytes] = {}
        # Started registries: entries whose job is not started by a live worker.
        for queue in queues:
            registry = queue.started_job_registry
            for entry in self.conn.zrange(registry.key, 0, -1):
                job_id = registry.parse_job_id(entry.decode())
                status, worker = self.conn.hmget(Job.key_for(job_id), "status", "worker_name")
                if status == JobStatus.STARTED.value.encode() and worker and worker.decode() in live:
                    # ...and the worker still lists this execution as its own (it may have restarted since).
                    if self.conn.sismember(WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker.decode()), entry):
                        continue
                seen[job_id] = status or b""
        if scan_all:
            queued_somewhere = self._ids_in_queues(queues)
            for key, status in self._job_statuses():
                job_id = key.removeprefix("rq:job:")
                if status == JobStatus.QUEUED.value.encode() and job_id not in queued_somewhere:
                    seen[job_id] = status
        handed_back = []
        for job_id, status in seen.items():
            first = self.suspects.get(job_id)
            if first is None or first[1] != status:
                self.suspects[job_id] = (now, status)
            elif now - first[0] >= self.grace and self._hand_back(job_id):
                handed_back.append(job_id)
        for job_id in set(self.suspects) - set(seen) | set(handed_back):
            self.suspects.pop(job_id, None)
        if handed_back:
            log.warning("jobs no worker held went back to their queues: %s", ", ".join(handed_back))
        return handed_back

    def _live_workers(self) -> set[str]:
        live = set()
        for worker in SimpleWorker.all(connection=self.conn):
            if not _dead_here(worker.hostname, worker.pid):
                live.add(worker.name)
        return live

    def _ids_in_queues(self, queues: list) -> set[str]:  # noqa: ANN001
        ids: set[str] = set()
        for queue in queues:
            for key in (queue.key, queue.intermediate_queue_key):
                ids.update(v.decode() for v in self.conn.lrange(key, 0, -1))
        return ids

    def _job_statuses(self):  # noqa: ANN202
        batch: list[bytes] = []
        for key in self.conn.scan_iter("rq:job:*", count=1000):
            if key.count(b":") == 2:  # rq:job:<id>, not rq:job:<id>:dependents
                batch.append(key)
            if len(batch) >= 500:
                yield from self._statuses(batch)
                batch = []
        yield from self._statuses(batch)

    def _statuses(self, keys: list[bytes]):  # noqa: ANN202
        with self.conn.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "status")
            for key, status in zip(keys, pipe.execute()):
                yield key.decode(), status

    def _hand_back(self, job_id: str) -> bool:
        from rq import Queue

        from ocrhub.worker import stop_retrying_permanent_errors

        job = Job.fetch(job_id, connection=self.conn, serializer=JSONSerializer) if self.conn.exists(Job.key_for(job_id)) else None
        if job is None:
            return False
        queue = Queue(job.origin, connection=self.conn, serializer=JSONSerializer)
        registry = queue.started_job_registry
        entries = [e for e in self.conn.zrange(registry.key, 0, -1) if registry.parse_job_id(e.decode()) == job_id]
        status = job.get_status()
        if status == JobStatus.STARTED and entries:
            for entry in entries:  # RQ's own path for an abandoned job: retry, or failed when none is left
                self.conn.zadd(registry.key, {entry: 0}, xx=True)
            registry.cleanup(exception_handlers=[stop_retrying_permanent_errors])
            return True
        if status in (JobStatus.QUEUED, JobStatus.STARTED):
            for entry in entries:
                self.conn.zrem(registry.key, entry)
            if self.conn.lpos(queue.key, job_id) is None:
                queue.enqueue_job(job, at_front=True)
            return True
        if status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED):
            for entry in entries:  # finished, but its registry entry was never removed
                self.conn.zrem(registry.key, entry)
            return False
        return False
