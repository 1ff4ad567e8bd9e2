"""A real vLLM server (CPU build, tiny random Qwen2-VL) for the project's tests and benches.

Stdlib only: this module runs in the project's venv; vLLM runs in its own venv
(made by install.sh) as a subprocess in its own process group.

    from tests.vllm_real.server import available, real_vllm

    if available():
        with real_vllm(tmp_path, max_num_seqs=4, max_num_queued_reqs=8) as vllm:
            httpx.get(vllm.url + "/health")   # vllm.url == "http://127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MARKER = ".ocrhub-vllm-complete"  # written by install.sh when the venv is complete
MODEL_SUBDIR = "tiny-qwen2-vl"
DEFAULT_SERVED_NAME = "tencent/HunyuanOCR"


def venv_dir() -> Path:
    return Path(os.environ.get("OCRHUB_VLLM_VENV") or REPO / ".venv-vllm")


def vllm_venv_python() -> Path:
    return venv_dir() / "bin" / "python"


def available() -> bool:
    """True when install.sh has completed the vllm venv."""
    return (venv_dir() / MARKER).is_file() and vllm_venv_python().exists()


def model_dir() -> Path:
    return venv_dir() / MODEL_SUBDIR


def ensure_model(timeout: float = 600) -> Path:
    """Build the tiny model into the venv once (under a file lock); return its folder."""
    out = model_dir()
    done = out / ".tiny-model-complete"
    if done.is_file():
        return out
    lock_path = venv_dir() / (MODEL_SUBDIR + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            subprocess.run(
                [str(vllm_venv_python()), str(HERE / "tiny_model.py"), str(out)],
                check=True,
                timeout=timeout,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
            )
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RealVllm:
    url: str  # base URL, e.g. http://127.0.0.1:PORT (append /v1/... yourself)
    port: int
    process: subprocess.Popen
    log_path: Path
    model: str  # the served model name
    model_dir: Path

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        process.wait()
        return
    for sig in (signal.SIGCONT, signal.SIGTERM):  # SIGCONT in case a test froze it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # The engine and worker processes share the group; make sure none outlives us.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@contextlib.contextmanager
def real_vllm(
    tmp_dir: os.PathLike | str,
    *,
    port: int | None = None,
    max_num_seqs: int = 4,
    max_num_queued_reqs: int | None = None,
    no_repeat: bool = True,
    kv_cache_tokens: int | None = None,
    kv_cache_space_gb: int | None = None,
    max_model_len: int | None = None,
    served_model_name: str = DEFAULT_SERVED_NAME,
    model: os.PathLike | str | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    startup_timeout: float = 300,
) -> Iterator[RealVllm]:
    """Start vLLM's OpenAI server on 127.0.0.1, wait for /health, stop it on exit.

    kv_cache_tokens: a small KV cache (in tokens, rounded up to 128-token
    blocks) to provoke preemptions; kv_cache_space_gb: size it in GiB instead
    (default 1 GiB, ~2M tokens for the tiny model).
    """
    if not available():
        raise RuntimeError(f"no complete vllm venv at {venv_dir()}: run bash tests/vllm_real/install.sh")
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    model_path = Path(model) if model is not None else ensure_model()
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(vllm_venv_python()), str(HERE / "serve.py"),
        "--model", str(model_path),
        "--port", str(port),
        "--served-model-name", served_model_name,
        "--max-num-seqs", str(max_num_seqs),
    ]  # fmt: skip
    if max_num_queued_reqs is not None:
        cmd += ["--max-num-queued-reqs", str(max_num_queued_reqs)]
    if kv_cache_tokens is not None:
        cmd += ["--kv-cache-tokens", str(kv_cache_tokens)]
    elif kv_cache_space_gb is not None:
        cmd += ["--kv-cache-space", str(kv_cache_space_gb)]
    if max_model_len is not None:
        cmd += ["--max-model-len", str(max_model_len)]
    if no_repeat:
        cmd.append("--no-repeat")
    cmd += list(extra_args)

    log_path = tmp / f"vllm-{port}.log"
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONHOME"))}
    proc_env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    proc_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(tmp),
            env=proc_env,
            start_new_session=True,  # own process group: stopped as a whole
        )
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with {process.returncode} while starting; log {log_path}:\n{_tail(log_path, 60)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"vLLM not healthy after {startup_timeout:.0f} s; log {log_path}:\n{_tail(log_path, 60)}"
                )
            time.sleep(0.5)
        yield RealVllm(url, port, process, log_path, served_model_name, model_path)
    finally:
        _stop(process)
