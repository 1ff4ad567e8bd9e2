"""An RQ worker that loads the OCR engine once and runs jobs in its own process (no fork per job)."""

from __future__ import annotations

import importlib
import logging
import socket

import redis
from PIL import Image
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from ocr_core.engines import get_engine
from ocr_core.errors import PermanentError
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


def build_worker(conn: redis.Redis, settings: Settings, name: str | None = None) -> SimpleWorker:
    # SimpleWorker, not the forking Worker: the engine's ONNX sessions and thread pools live in
    # this process and stay warm across jobs; forking after they exist is unsafe and reloads nothing.
    return SimpleWorker(
        all_queues(conn, settings),
        connection=conn,
        serializer=JSONSerializer,
        exception_handlers=[stop_retrying_permanent_errors],
        name=name,
    )


def warm_up(settings: Settings) -> None:
    """Pay every one-time cost before taking a job: model load, first inference, SDK imports."""
    engine = get_engine(settings.ocr_engine, settings.threads_per_engine)
    engine.recognise(Image.new("RGB", (320, 64), "white"))
    for path in (*FETCHERS.values(), *SCHEMES.values(), DELIVER):
        module_name = path.partition(":")[0] if ":" in path else path.rpartition(".")[0]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            log.warning("cannot preload %s: %s", module_name, exc)


def run_worker(conn: redis.Redis, settings: Settings, *, burst: bool = False, name: str | None = None) -> bool:
    logging.getLogger("rq.worker").setLevel(settings.log_level)
    warm_up(settings)
    worker = build_worker(conn, settings, name)
    return worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level)


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
            if job is not None and job.worker_name == worker_name and job.get_status() == "started":
                conn.zadd(registry.key, {entry: 0}, xx=True)  # expired now: cleanup() retries it
                in_queue.append(job_id)
        if in_queue:
            registry.cleanup(exception_handlers=[stop_retrying_permanent_errors])
        reaped += in_queue
    dead = SimpleWorker.find_by_key(SimpleWorker.redis_worker_namespace_prefix + worker_name, connection=conn)
    if dead is not None:
        dead.register_death()
    if reaped:
        log.warning("worker %s died; its jobs go back to the queue: %s", worker_name, ", ".join(reaped))
    return reaped


def reap_stale(conn: redis.Redis, settings: Settings) -> list[str]:
    """Workers of this machine that RQ still lists but whose process is gone (a hub killed outright)."""
    reaped = []
    for worker in SimpleWorker.all(connection=conn):
        if worker.hostname == socket.gethostname() and worker.pid and not pid_alive(worker.pid):
            reaped += reap(conn, settings, worker.name)
    return reaped

