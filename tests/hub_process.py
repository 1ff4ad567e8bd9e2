"""`ocrhub up` as a real subprocess for end-to-end tests: started with OCRHUB_* settings, stopped with Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from ocrhub.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
STARTUP = 180.0


@dataclass
class Hub:
    url: str
    conn: redis.Redis
    process: subprocess.Popen
    data: Path
    log: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    @property
    def headers(self) -> dict[str, str]:
        """The API token the hub generated into its data folder (OCRHUB_API_TOKEN when set)."""
        return {"Authorization": f"Bearer {(self.data / 'api-token').read_text().strip()}"}

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", **{"headers": self.headers, "timeout": 10, **kwargs})  # type: ignore[arg-type]

    def post(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", **{"headers": self.headers, "timeout": 10, **kwargs})  # type: ignore[arg-type]

    def published(self) -> dict:
        return json.loads((self.data / "hub.json").read_text())

    def child_pid(self, name: str) -> int:
        return next(c["pid"] for c in self.published()["children"] if c["name"] == name)


def hub_environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This process's environment without its OCRHUB_* settings: data under tmp_path/hub, a free API port, `settings` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
    env.update(OCRHUB_DATA_DIR=str(tmp_path / "hub"), OCRHUB_API_PORT=str(free_port()), PYTHONPATH=str(ROOT), **settings)
    return env


def drained(hub: Hub) -> bool:
    """Nothing queued, running or waiting for a retry, on any queue."""
    queues = hub.get("/api/queue").json()
    return all(q["queued"] == q["started"] == q["scheduled"] == 0 for q in queues.values())


def settled(hub: Hub) -> bool:
    """Drained, and still so a second later: a retry or a follow-up job had its chance to appear."""
    if not drained(hub):
        return False
    time.sleep(1.0)
    return drained(hub)


def start_hub(tmp_path: Path, env: dict[str, str], log_name: str = "hub.log") -> Hub:
    """`ocrhub up` with `env`, once its API answers; the caller stops it."""
    data, port = Path(env["OCRHUB_DATA_DIR"]), env["OCRHUB_API_PORT"]
    log = tmp_path / log_name
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "ocrhub.cli", "up"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP
    while True:
        if process.poll() is not None:
            raise AssertionError(f"ocrhub up exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no /healthz within {STARTUP:.0f} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    published = json.loads((data / "hub.json").read_text())
    return Hub(url, redis.Redis.from_url(published["redis_url"]), process, data, log)


def stop_hub(hub: Hub) -> None:
    if hub.process.poll() is not None:
        return
    hub.process.send_signal(signal.SIGINT)
    try:
        hub.process.wait(90)
    except subprocess.TimeoutExpired:
        hub.process.kill()
        hub.process.wait()


@contextmanager
def running_hub(tmp_path: Path, **settings: str) -> Iterator[Hub]:
    """A hub with its data under tmp_path/hub, a free API port and `settings` (OCRHUB_* names) on top.

    The tests package is importable in the hub's processes, so test engines can be named by dotted path.
    """
    hub = start_hub(tmp_path, hub_environment(tmp_path, **settings))
    try:
        yield hub
    finally:
        stop_hub(hub)
