"""How processes of one hub find each other, and why there is only one hub per data folder.

A running `ocrhub up` holds a lock on data_dir/hub.lock for its whole life (the kernel releases it
when the process dies, however it dies) and publishes its Redis URL, API address and children in
data_dir/hub.json, so the next hub can stop what a killed one left running.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from pathlib import Path

import redis

from ocrhub.settings import Settings


class HubRunning(RuntimeError):
    """Another hub holds this data folder."""


def hub_file(settings: Settings) -> Path:
    return settings.data_dir / "hub.json"


def secure_data_dir(settings: Settings) -> Path:
    """The data folder, private to its owner (0700, files 0600): it holds the queue, the store and the API token."""
    folder = settings.data_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)
    return folder


class HubLock:
    """`flock` on data_dir/hub.lock: held while the hub lives, gone with its process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.data_dir / "hub.lock"
        self.fd: int | None = None

    def acquire(self) -> HubLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = _read(hub_file(self.settings)) or {}
            raise HubRunning(
                f"another ocrhub is running on {self.settings.data_dir}: pid {info.get('pid', '?')}, API {info.get('api_url', '?')}. "
                f"Stop it first, or give this one its own OCRHUB_DATA_DIR"
            ) from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def publish(settings: Settings, redis_url: str, api_url: str, children: list[dict] | None = None) -> None:
    path = hub_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"redis_url": redis_url, "api_url": api_url, "pid": os.getpid(), "children": children or []}))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def unpublish(settings: Settings) -> None:
    hub_file(settings).unlink(missing_ok=True)


def child_record(name: str, pid: int) -> dict:
    return {"name": name, "pid": pid, "started": process_start(pid)}


def process_start(pid: int) -> str:
    """The kernel's start time of a process: with the pid, it names one process even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def stop_leftovers(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Processes a killed hub left behind on this data folder (its Redis first of all): stopped, and waited for.

    Call only while holding the HubLock."""
    info = _read(hub_file(settings))
    if not info:
        return []
    alive = [c for c in info.get("children", []) if c.get("started") and process_start(int(c["pid"])) == c["started"]]
    for child in alive:
        _signal(int(child["pid"]), signal.SIGTERM)  # Redis writes its append-only file and exits
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(process_start(int(c["pid"])) == c["started"] for c in alive):
        time.sleep(0.1)
    for child in alive:
        if process_start(int(child["pid"])) == child["started"]:
            _signal(int(child["pid"]), signal.SIGKILL)
    unpublish(settings)
    return [f"{c['name']} (pid {c['pid']})" for c in alive]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _read(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def running_hub(settings: Settings) -> dict[str, str] | None:
    info = _read(hub_file(settings))
    if info is None:
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return info


def redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    hub = running_hub(settings)
    if hub:
        return hub["redis_url"]
    raise RuntimeError(
        f"no Redis to talk to: set OCRHUB_REDIS_URL, or start the hub with `ocrhub up` "
        f"(it publishes its embedded Redis in {hub_file(settings)})"
    )


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(redis_url(settings), health_check_interval=30)
