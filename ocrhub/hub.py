"""`ocrhub up`: Redis (embedded unless configured), the HTTP API and the workers, supervised in the foreground."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis

from ocrhub import runtime
from ocrhub.redis_server import EmbeddedRedis
from ocrhub.settings import Settings
from ocrhub.worker import reap, reap_stale
from sinks.base import mask

log = logging.getLogger("ocrhub.hub")

# A crashing child is restarted, but not in a tight loop.
RESTART_BACKOFF = (1, 2, 5, 10, 30)


@dataclass
class Child:
    name: str
    args: list[str]
    worker_name: str = ""  # RQ's name for it, when the child is a worker
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        # Own session: a terminal's Ctrl-C reaches only the hub, which stops children in order.
        self.process = subprocess.Popen(self.args, env=env, start_new_session=True)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: EmbeddedRedis | None = None
        self.children: list[Child] = []
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        try:
            redis_url = self._start_redis()
            self.conn = redis.Redis.from_url(redis_url)
            problems = self._check_configuration()
            if problems:
                for problem in problems:
                    log.error("%s", problem)
                log.error("not starting: fix the configuration above (see `ocrhub settings`)")
                return 2
            env = {**os.environ, "OCRHUB_REDIS_URL": redis_url}
            api_url = f"http://{self.settings.api_host}:{self.settings.api_port}"
            python = sys.executable
            self.children.append(Child("api", [python, "-m", "ocrhub.cli", "serve"]))
            reap_stale(self.conn, self.settings)
            for i in range(self.settings.worker_count):
                name = f"ocrhub-{os.getpid()}-{i + 1}"
                self.children.append(Child(f"worker-{i + 1}", [python, "-m", "ocrhub.cli", "worker", "--name", name], worker_name=name))
            for child in self.children:
                child.start(env)
            runtime.publish(self.settings, redis_url, api_url)
            log.info(
                "ocrhub is up: API %s, Redis %s, %d worker(s), engine %s; Ctrl-C stops",
                api_url, mask(urlsplit(redis_url)), self.settings.worker_count, self.settings.ocr_engine,
            )
            while not self.stopping:
                self._supervise(env)
                time.sleep(0.2)
            return 0
        finally:
            self._shutdown()

    def _start_redis(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        self.redis = EmbeddedRedis(self.settings.data_dir / "redis").start()
        log.info("embedded redis-server on %s, data in %s", self.redis.url, self.redis.folder)
        return self.redis.url

    def _check_configuration(self) -> list[str]:
        """What would make a child fail at every start (a bot without secrets, a broken sink), found once."""
        from ocrhub.api import create_app
        from sinks.base import SinkContext, check_sinks

        problems = []
        try:
            create_app(self.settings, self.conn)
        except ValueError as exc:
            problems.append(str(exc))
        if self.settings.ocr_engine == "vllm":
            from ocr_core.engines.vllm import configuration_problems

            problems += configuration_problems(self.settings)
        return problems + check_sinks(SinkContext(self.settings, self.conn))

    def _supervise(self, env: dict[str, str]) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.alive() or self.stopping:
                continue
            if child.process is not None and child.next_start == 0.0:
                code = child.process.returncode
                if now - child.started_at > 60:
                    child.restarts = 0
                delay = RESTART_BACKOFF[min(child.restarts, len(RESTART_BACKOFF) - 1)]
                log.warning("%s exited with code %s; restarting in %d s", child.name, code, delay)
                _stop_orphans(child.process.pid)
                if child.worker_name:
                    reap(self.conn, self.settings, child.worker_name)
                child.next_start = now + delay
                child.restarts += 1
            if now >= child.next_start:
                child.next_start = 0.0
                child.start(env)

    def _request_stop(self, signum: int, frame: object) -> None:
        if self.stopping:
            log.warning("second signal: stopping children now")
            for child in self.children:
                if child.alive():
                    child.process.kill()  # type: ignore[union-attr]
        self.stopping = True

    def _shutdown(self) -> None:
        self.stopping = True
        runtime.unpublish(self.settings)
        # Workers finish the job in hand (RQ warm shutdown on SIGTERM) before Redis goes away.
        for child in self.children:
            if child.alive():
                child.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + self.settings.job_timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait()
        if self.redis is not None:
            self.redis.stop()
        log.info("ocrhub stopped")


def _stop_orphans(pgid: int) -> None:
    """A worker's own children (RQ's scheduler) outlive a killed worker; its process group does not."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass

