"""An RQ worker that loads the OCR engine once and runs jobs in its own process (no fork per job)."""

from __future__ import annotations

import importlib
import logging
import socket
import threading
from datetime import datetime, timedelta, timezone

import redis
from PIL import Image
from rq import SimpleWorker
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

from ocr_core.engines import get_engine
from ocr_core.errors import Deferred, PermanentError
from ocr_core.queue import DELIVER, all_queues
from ocr_core.sources import FETCHERS
from ocrhub.redis_server import pid_alive
from ocrhub.settings import Settings
from sinks.base import SCHEMES

log = logging.getLogger(__name__)


def stop_retrying_permanent_errors(job, exc_type, exc_value, traceback) -> bool:  # noqa: ANN001
    """RQ exception handler: a PermanentError goes straight to the failed-job registry."""
    if isinstance(exc_value, PermanentError):
        job.retries_left = 0
    return True


class OcrWorker(SimpleWorker):
    """SimpleWorker, not the forking Worker: the engine's ONNX sessions and thread pools live in
    this process and stay warm across jobs; forking after they exist is unsafe and reloads nothing.

    A job that raises `Deferred` (every OCR server busy or down) goes back to the scheduled
    registry for later, without spending one of its retries and without an error in the log."""

    def handle_exception(self, job, *exc_info):  # noqa: ANN001, ANN002
        if isinstance(exc_info[1], Deferred):
            job.deferred_for = exc_info[1].delay
            self.log.info("job %s deferred for %g s: %s", job.id, exc_info[1].delay, exc_info[1])
            return
        super().handle_exception(job, *exc_info)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):  # noqa: ANN001
        delay = getattr(job, "deferred_for", None)
        if delay is None:
            return super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
            queue.schedule_job(job, datetime.now(timezone.utc) + timedelta(seconds=delay), pipeline=pipe)
            pipe.execute()


class ThreadWorker(OcrWorker):
    """One more job runner inside a worker process, for engines that wait on the network (vLLM):
    many requests in flight from one process instead of one process per request. The process's
    main worker owns the signals; this one stops when told, after the job in hand."""

    death_penalty_class = TimerDeathPenalty  # SIGALRM reaches only the main thread

    def _install_signal_handlers(self) -> None:
        pass

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):  # noqa: ANN001
        if timeout is None:  # burst: one look, no wait
            return super().dequeue_job_and_maintain_ttl(None, max_idle_time)
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=5)
            if result is not None:
                return result
        return None


def build_worker(conn: redis.Redis, settings: Settings, name: str | None = None, worker_class: type[OcrWorker] = OcrWorker) -> OcrWorker:
    return worker_class(
        all_queues(conn, settings),
        connection=conn,
        serializer=JSONSerializer,
        exception_handlers=[stop_retrying_permanent_errors],
        name=name,
    )


def warm_up(settings: Settings) -> None:
    """Pay every one-time cost before taking a job: model load, first inference, SDK imports."""
    engine = get_engine(settings.ocr_engine, settings.threads_per_engine)
    if hasattr(engine, "warm_up"):
        engine.warm_up()
    else:
        engine.recognise(Image.new("RGB", (320, 64), "white"))
    for path in (*FETCHERS.values(), *SCHEMES.values(), DELIVER):
        module_name = path.partition(":")[0] if ":" in path else path.rpartition(".")[0]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            log.warning("cannot preload %s: %s", module_name, exc)


def run_worker(conn: redis.Redis, settings: Settings, *, burst: bool = False, name: str | None = None) -> bool:
    """The main worker in this thread (signals, scheduler), plus `threads_per_worker - 1` thread workers named `<name>.<n>`."""
    logging.getLogger("rq.worker").setLevel(settings.log_level)
    warm_up(settings)
    worker = build_worker(conn, settings, name)
    helpers = [
        build_worker(redis.Redis(connection_pool=conn.connection_pool), settings, f"{worker.name}.{n}", ThreadWorker)
        for n in range(2, settings.threads_per_worker + 1)
    ]
    threads = [
        threading.Thread(target=helper.work, kwargs={"burst": burst, "logging_level": settings.log_level}, name=helper.name, daemon=True)
        for helper in helpers
    ]
    for thread in threads:
        thread.start()
    try:
        worked = worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)
    except SystemExit:
        raise  # cold shutdown: the threads die with the process, the supervisor hands their jobs back
    finally:
        for helper in helpers:
            helper._stop_requested = True  # each finishes the job in hand, then leaves
    for thread in threads:
        thread.join()
    return worked


def reap(conn: redis.Redis, settings: Settings, worker_name: str) -> list[str]:
    """After a worker died without saying so (SIGKILL, OOM): retry its jobs now, free its name.

    RQ would find the jobs only once their timeout had passed; the supervisor knows at once.
    Returns the ids of the jobs handed back to their queues (or to the failed registry when
    no retries were left).
    """
    reaped = []
    for queue in all_queues(conn, settings):
        registry = queue.started_job_registry
        in_queue = []
        for entry in conn.zrange(registry.key, 0, -1):
            job_id = registry.parse_job_id(entry.decode())
            job = queue.fetch_job(job_id)
            if job is not None and _same_process(job.worker_name, worker_name) and job.get_status() == "started":
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
        if worker.hostname == socket.gethostname() and worker.pid and not pid_alive(worker.pid) and "." not in worker.name:
            reaped += reap(conn, settings, worker.name)
    return reaped

