"""An RQ worker that loads the OCR engine once and runs jobs in its own process (no fork per job)."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import redis
from PIL import Image
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.exceptions import StopRequested
from rq.job_lifecycle import call_exception_handlers
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

from ocr_core.engines import get_engine
from ocr_core.errors import Deferred, OcrHubError, PermanentError
from ocr_core.queue import DELIVER, PROCESS, all_queues
from ocr_core.sources import FETCHERS
from ocrhub.logs import job_context
from ocrhub.reaper import OrphanSweep, clear_stale_scheduler_locks
from ocrhub.settings import Settings
from sinks.base import SCHEMES

log = logging.getLogger(__name__)


# Everything a worker may run. Anyone who can write to Redis can queue a job naming any function;
# without this list a job naming os.system would run, as whoever runs the worker.
JOB_FUNCTIONS = frozenset({PROCESS, DELIVER, "bots.feishu.intake.expand", "bots.feishu.commands.answer"})


WORKER_TTL = 60


class RefusedJob(PermanentError):
    """A job naming a function that is not one of ocrhub's own."""


class OcrhubJob(Job):
    """An RQ job that resolves only the functions in JOB_FUNCTIONS, and no callbacks at all."""

    @property
    def func(self):  # noqa: ANN201
        if self.instance is not None or self.func_name not in JOB_FUNCTIONS:
            raise RefusedJob(f"refused to run {self.func_name!r}: not one of ocrhub's job functions (someone wrote this job into Redis)")
        return super().func

    # Callbacks are imported by name too, and ocrhub's jobs have none.
    success_callback = property(lambda self: None)
    failure_callback = property(lambda self: None)
    stopped_callback = property(lambda self: None)


def image_job_id(rq_job_id: str) -> str:
    """The image's job id inside RQ's ids (ocr-<id>, deliver-<id>-<sink>); other jobs keep their own."""
    kind, _, rest = rq_job_id.partition("-")
    if kind == "ocr":
        return rest
    if kind == "deliver":
        return rest.partition("-")[0]
    return rq_job_id


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
        error = exc_info[1]
        if isinstance(error, Deferred):
            job.deferred_for = error.delay
            self.log.info("job %s deferred for %g s: %s", job.id, error.delay, error)
            return
        if isinstance(error, OcrHubError):
            # Its message is meant for a person (a bad image, Notion's answer): one line, no traceback.
            outcome = "failed" if isinstance(error, PermanentError) or not job.retries_left else "will be retried"
            self.log.warning("job %s %s: %s", job.id, outcome, " ".join(str(error).split()) or type(error).__name__)
            call_exception_handlers(self._exc_handlers, job, *exc_info)
            return
        super().handle_exception(job, *exc_info)

    def perform_job(self, job, queue, execution):  # noqa: ANN001
        # Every log line of the job, RQ's and ours, carries the image's job id (as the webhook's did).
        with job_context(image_job_id(job.id)):
            return super().perform_job(job, queue, execution)

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
        job_class=OcrhubJob,
        exception_handlers=[stop_retrying_permanent_errors],
        name=name,
        # A worker that vanishes (a lost machine, a killed container) is known dead a minute after its
        # last heartbeat, not RQ's seven: then the sweep hands its jobs back.
        worker_ttl=WORKER_TTL,
    )


class Scheduler:
    """RQ's scheduler (scheduled retries, deferred jobs) as a thread of the worker, that lives through
    Redis outages.

    RQ's own runs in a forked process that dies at the first lost connection and is restarted only
    at the ten-minute maintenance; its lock outlives a killed holder by a minute. Here every worker
    tries for the locks every second, and locks of dead processes of this machine are cleared."""

    # While it holds the locks it also sweeps for jobs nobody holds (ocrhub.reaper): on machines
    # without `ocrhub up` (compose, several hosts) nothing else would, before RQ's own timeouts.
    SWEEP_EVERY = 15.0
    SWEEP_ALL_EVERY = 300.0

    def __init__(self, conn: redis.Redis, settings: Settings, name: str, interval: int = 1) -> None:
        self.rq = RQScheduler(all_queues(conn, settings), connection=conn, serializer=JSONSerializer, name=f"{name}-scheduler", interval=interval)
        self.rq._connection = conn
        self.interval = interval
        self.sweep = OrphanSweep(conn, settings)
        self.next_sweep = self.next_full_sweep = time.monotonic() + self.SWEEP_EVERY
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"{name}-scheduler", daemon=True)

    def start(self) -> Scheduler:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        try:
            self.rq.release_locks()
            self.rq.register_death()
        except redis.RedisError:
            pass

    def _sweep(self) -> None:
        now = time.monotonic()
        if now < self.next_sweep:
            return
        full = now >= self.next_full_sweep
        self.sweep.run(scan_all=full)  # a worker gone since the last sweep makes it a full one too
        # What looked orphaned once is looked at again a grace later, and handed back if it still is.
        self.next_sweep = now + (self.sweep.grace if self.sweep.suspects else self.SWEEP_EVERY)
        if full:
            self.next_full_sweep = now + self.SWEEP_ALL_EVERY

    def _run(self) -> None:
        backoff = 1.0
        born = False
        while not self.stop.is_set():
            try:
                if not born:
                    self.rq.register_birth()
                    born = True
                if self.rq.acquired_locks != self.rq._queue_names:
                    clear_stale_scheduler_locks(self.rq.connection, self.rq._queue_names - self.rq.acquired_locks)
                    self.rq.acquire_locks()
                else:
                    self.rq.heartbeat()
                if self.rq.acquired_locks:
                    self.rq.enqueue_scheduled_jobs()
                    self._sweep()
                backoff = 1.0
                self.stop.wait(self.interval)
            except redis.RedisError as exc:
                log.warning("scheduler: %s: %s; trying again in %.0f s", type(exc).__name__, exc, backoff)
                self.rq._acquired_locks = set()  # whether they survived is known only once Redis is back
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


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
    """The main worker in this thread (signals), a scheduler thread, and `threads_per_worker - 1`
    thread workers named `<name>.<n>`. A Redis outage is waited out, never a reason to exit."""
    logging.getLogger("rq.worker").setLevel(settings.log_level)
    warm_up(settings)
    backoff = 1.0
    while True:
        worker = build_worker(conn, settings, name)
        try:
            return _work(conn, settings, worker, burst)
        except StopRequested:
            return False
        except (redis.ConnectionError, redis.TimeoutError, ValueError) as exc:
            if isinstance(exc, ValueError) and "exists an active worker" not in str(exc):
                raise
            log.warning("worker %s: Redis unreachable (%s); starting again in %.0f s", worker.name, exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            _forget(worker, settings)


def _work(conn: redis.Redis, settings: Settings, worker: OcrWorker, burst: bool) -> bool:
    helpers = [
        build_worker(redis.Redis(connection_pool=conn.connection_pool), settings, f"{worker.name}.{n}", ThreadWorker)
        for n in range(2, settings.threads_per_worker + 1)
    ]
    threads = [
        threading.Thread(target=_work_thread, args=(helper, burst, settings), name=helper.name, daemon=True)
        for helper in helpers
    ]
    scheduler = None if burst else Scheduler(conn, settings, worker.name).start()
    for thread in threads:
        thread.start()
    try:
        if burst:  # one pass of the scheduler, as RQ's burst mode does
            return worker.work(burst=True, with_scheduler=True, logging_level=settings.log_level)
        return worker.work(logging_level=settings.log_level)
    except SystemExit:
        raise  # cold shutdown: the threads die with the process, the supervisor hands their jobs back
    finally:
        for helper in helpers:
            helper._stop_requested = True  # each finishes the job in hand, then leaves
        for thread in threads:
            thread.join()
        if scheduler is not None:
            scheduler.close()


def _work_thread(worker: ThreadWorker, burst: bool, settings: Settings) -> None:
    backoff = 1.0
    while not worker._stop_requested:
        try:
            worker.work(burst=burst, logging_level=settings.log_level)
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("worker %s: Redis unreachable (%s); starting again in %.0f s", worker.name, exc, backoff)
            time.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            _forget(worker, settings)


def _forget(worker: OcrWorker, settings: Settings) -> None:
    """After an outage: hand back what this worker held (its job's end was never written), free its name."""
    from ocrhub.reaper import reap

    try:
        reap(worker.connection, settings, worker.name)
    except redis.RedisError:
        pass
