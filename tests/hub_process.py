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


def hub_environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This process's environment without its OCRHUB_* settings: data under tmp_path/hub, a free API port, `settings` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
    env.update(OCRHUB_DATA_DIR=str(tmp_path / "hub"), OCRHUB_API_PORT=str(free_port()), PYTHONPATH=str(ROOT), **settings)
    return env


@contextmanager
def running_hub(tmp_path: Path, **settings: str) -> Iterator[Hub]:
    """A hub with its data under tmp_path/hub, a free API port and `settings` (OCRHUB_* names) on top.

    The tests package is importable in the hub's processes, so test engines can be named by dotted path.
    """
    env = hub_environment(tmp_path, **settings)
    data, port = Path(env["OCRHUB_DATA_DIR"]), env["OCRHUB_API_PORT"]
    log = tmp_path / "hub.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "ocrhub.cli", "up"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            assert process.poll() is None, f"ocrhub up exited with {process.returncode}:\n{log.read_text()[-4000:]}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no /healthz within {STARTUP:.0f} s:\n{log.read_text()[-4000:]}"
            time.sleep(0.2)
        published = json.loads((data / "hub.json").read_text())
        yield Hub(url, redis.Redis.from_url(published["redis_url"]), process, data, log)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
