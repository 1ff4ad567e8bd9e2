"""`ocrhub up`: Redis (embedded unless configured), the HTTP API and the workers, supervised in the foreground.

One hub per data folder (runtime.HubLock). Every child, Redis included, is restarted when it dies
and dies when the hub dies (even by SIGKILL); a Redis outage is waited out, never a reason to stop.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import redis

from ocrhub import runtime
from ocrhub.auth import api_token, redis_password
from ocrhub.logs import add_secret
from ocrhub.reaper import OrphanSweep, reap, reap_stale
from ocrhub.redis_server import EmbeddedRedis, die_with_parent
from ocrhub.settings import Settings
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
        # Gone with the hub: a killed hub leaves no worker behind on a Redis the next hub restarts.
        self.process = subprocess.Popen(self.args, env=env, start_new_session=True, preexec_fn=die_with_parent(os.getpid(), signal.SIGKILL))
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Hub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: EmbeddedRedis | None = None
        self.redis_restarts = 0
        self.redis_next_start = 0.0
        self.children: list[Child] = []
        self.stopping = False
        self.lock = runtime.HubLock(settings)
        self.to_reap: set[str] = set()
        self.sweep: OrphanSweep | None = None
        self.sweep_due: float | None = 0.0  # monotonic time of the next sweep; None: none pending

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        os.umask(0o077)  # everything the hub and its children write is its owner's alone
        try:
            self.lock.acquire()
        except runtime.HubRunning as exc:
            log.error("%s", exc)
            return 3
        try:
            runtime.secure_data_dir(self.settings)
            left = runtime.stop_leftovers(self.settings)
            if left:
                log.warning("stopped what a previous hub left running: %s", ", ".join(left))
            add_secret(api_token(self.settings, create=True))
            redis_url = self._start_redis()
            self.conn = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=2)
            problems = self._check_configuration() + _port_problems(self.settings.api_host, self.settings.api_port)
            if problems:
                for problem in problems:
                    log.error("%s", problem)
                log.error("not starting: fix the configuration above (see `ocrhub settings`)")
                return 2
            self.env = {**os.environ, "OCRHUB_REDIS_URL": redis_url}
            self.redis_url = redis_url
            self.api_url = f"http://{self.settings.api_host}:{self.settings.api_port}"
            python = sys.executable
            self.children.append(Child("api", [python, "-m", "ocrhub.cli", "serve"]))
            reap_stale(self.conn, self.settings)
            self.sweep = OrphanSweep(self.conn, self.settings)
            for i in range(self.settings.worker_count):
                name = f"ocrhub-{os.getpid()}-{i + 1}"
                self.children.append(Child(f"worker-{i + 1}", [python, "-m", "ocrhub.cli", "worker", "--name", name], worker_name=name))
            for child in self.children:
                child.start(self.env)
            self._publish()
            log.info(
                "ocrhub is up: API %s, Redis %s, %d worker(s), engine %s; Ctrl-C stops",
                self.api_url, mask(urlsplit(redis_url)), self.settings.worker_count, self.settings.ocr_engine,
            )
            while not self.stopping:
                self._supervise()
                time.sleep(0.2)
            return 0
        finally:
            self._shutdown()
            self.lock.release()

    def _publish(self) -> None:
        """hub.json, with every child's pid: what the next hub stops if this one is killed."""
        children = [runtime.child_record(c.name, c.process.pid) for c in self.children if c.process is not None]
        if self.redis is not None and self.redis.process is not None:
            children.insert(0, runtime.child_record("redis-server", self.redis.process.pid))
        runtime.publish(self.settings, self.redis_url, self.api_url, children)

    def _start_redis(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        password = redis_password(self.settings)
        add_secret(password)
        self.redis = EmbeddedRedis(
            self.settings.data_dir / "redis",
            port=self.settings.redis_port,
            maxmemory=self.settings.redis_maxmemory,
            die_with_parent=True,
            password=password,
        ).start()
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

    def _supervise(self) -> None:
        now = time.monotonic()
        self._supervise_redis(now)
        changed = False
        for child in self.children:
            if child.alive() or self.stopping:
                continue
            if child.process is not None and child.next_start == 0.0:
                code = child.process.returncode
                if now - child.started_at > 60:
                    child.restarts = 0
                delay = RESTART_BACKOFF[min(child.restarts, len(RESTART_BACKOFF) - 1)]
                log.warning("%s exited with code %s; restarting in %d s", child.name, code, delay)
                _stop_group(child.process.pid)
                if child.worker_name:
                    self.to_reap.add(child.worker_name)
                    self.sweep_due = now  # it may have died between a dequeue and the job's start
                child.next_start = now + delay
                child.restarts += 1
            if now >= child.next_start:
                child.next_start = 0.0
                child.start(self.env)
                changed = True
        if changed:
            self._publish()
        self._hand_back_jobs(now)

    def _supervise_redis(self, now: float) -> None:
        """The embedded Redis, restarted on its port and folder (the append-only file brings the queue back)."""
        if self.redis is None or self.redis.alive() or self.stopping:
            return
        if self.redis_next_start == 0.0:
            delay = RESTART_BACKOFF[min(self.redis_restarts, len(RESTART_BACKOFF) - 1)]
            log.error("redis-server exited with code %s; restarting it in %d s", self.redis.process.returncode, delay)  # type: ignore[union-attr]
            self.redis_next_start = now + delay
            self.redis_restarts += 1
            return
        if now < self.redis_next_start:
            return
        self.redis_next_start = 0.0
        try:
            self.redis.start()
        except RuntimeError as exc:
            log.error("%s", exc)
            return
        log.info("redis-server is back on %s", self.redis.url)
        self._publish()
        # Whatever was between two writes when it died: swept now, and again after the grace.
        self.sweep_due = now

    def _hand_back_jobs(self, now: float) -> None:
        """Reap dead workers' jobs and sweep orphans; with Redis away, try again on a later tick."""
        try:
            for name in sorted(self.to_reap):
                reap(self.conn, self.settings, name)
                self.to_reap.discard(name)
            if self.sweep is not None and self.sweep_due is not None and now >= self.sweep_due:
                # At once after an event (a worker died, Redis came back); again a grace later for
                # what looked orphaned the first time. The workers' scheduler sweeps periodically.
                self.sweep.run(scan_all=True)
                self.sweep_due = now + self.sweep.grace if self.sweep.suspects else None
            if self.redis_restarts and self.redis is not None and self.redis.alive():
                self.redis_restarts = 0 if now - self.redis.started_at > 60 else self.redis_restarts
        except redis.RedisError as exc:
            log.warning("Redis unreachable (%s); will try again", exc)
            self.sweep_due = now + 2.0

    def _request_stop(self, signum: int, frame: object) -> None:
        if self.stopping:
            log.warning("second signal: stopping children now")
            for child in self.children:
                if child.alive():
                    _stop_group(child.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        self.stopping = True

    def _shutdown(self) -> None:
        self.stopping = True
        if self.lock.fd is None:
            return  # never started: the folder belongs to another hub
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
            _stop_group(child.process.pid, signal.SIGKILL)  # anything it started goes with it
        if self.redis is not None:
            self.redis.stop()
        log.info("ocrhub stopped")


def _stop_group(pgid: int, sig: int = signal.SIGTERM) -> None:
    """A child's own children outlive it; its process group (its own session) does not."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass



def _port_problems(host: str, port: int) -> list[str]:
    """The API's address taken (another program, another hub on another data folder): say so once,
    instead of an API that restarts for ever behind "ocrhub is up"."""
    if not port:
        return []
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return [f"the API cannot listen on {host}:{port} ({exc.strerror}): set OCRHUB_API_PORT (or OCRHUB_API_HOST) to a free address"]
    return []
