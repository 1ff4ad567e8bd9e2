"""An emulator of vLLM 0.32's OpenAI-compatible server (v1 engine) serving a vision-language OCR model.

Real HTTP on 127.0.0.1 (uvicorn + starlette on one asyncio loop), in a thread of the test process:

    with VllmEmulator(max_num_seqs=4, kv_tokens=4096) as vllm:
        client = openai.OpenAI(base_url=vllm.base_url, api_key="none")
        vllm.set(down=True)                 # connection refused, open connections cut; down=False: back, same port
        vllm.set(fail_status=502, fail_times=2, slow=1.5, hang=True, max_num_seqs=8)
        vllm.stats()                        # counts, peaks, a (t, running, waiting) timeline

or in a process of its own, for benchmarks whose workers are other processes:

    python -m tests.emulators.vllm --port 8000 --max-num-seqs 16 --max-num-queued-reqs 64
    with VllmEmulatorProcess(max_num_seqs=16) as vllm: ...   # the same methods, over HTTP

Routes, as vLLM answers them (bodies and headers checked against a real server, tests/test_vllm_fidelity.py):
POST /v1/chat/completions (stream or not; data: URL images), GET /v1/models, GET /health (200, empty),
GET /metrics (vllm:* families, vllm_metrics), GET /version; 404 for an unknown model; 401 {"error": "Unauthorized"}
under /v1 without the api_key; 503 once `max_num_queued_reqs` requests are in flight (waiting + running, as vLLM
counts), checked before and after rendering as vLLM does (vllm_chat). Control: POST /_emulator/set (JSON knobs),
GET /_emulator/stats, POST /_emulator/reset, on the API port and on a control port that stays up when down.

Knobs (constructor keywords, `set()` at any time): the engine's max_num_seqs, max_num_queued_reqs, kv_tokens,
block_size, step_base, step_per_seq, prefill_tokens_per_s, max_model_len (vllm_engine); output_tokens, repeat
(vllm_prompt) and render_s (vllm_app); faults: down, health_status, fail_status + fail_times (the next N chat
requests get that status), slow (seconds an admitted request waits before it enters the engine's queue), hang
(chat requests wait until hang=False or `release()`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx

from tests.emulators.vllm_app import KNOBS, QuietServer, Service

__all__ = ["DEFAULT_MODEL", "KNOBS", "VllmEmulator", "VllmEmulatorProcess", "main"]

DEFAULT_MODEL = "tencent/HunyuanOCR"
REPO = Path(__file__).resolve().parents[2]


class _Controls:
    """What both ways of running share; subclasses provide `_call(op, knobs)`."""

    url: str

    @property
    def base_url(self) -> str:
        """The OpenAI client's base URL."""
        return self.url + "/v1"

    def set(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs now; returns all of them."""
        return self._call("set", knobs)

    def stats(self) -> dict[str, Any]:
        return self._call("stats", {})

    def reset(self) -> dict[str, Any]:
        """Zero the counts, peaks, timeline and Prometheus counters; clear the fault knobs."""
        return self._call("reset", {})

    def release(self) -> dict[str, Any]:
        """Let requests held by `hang` go on."""
        return self.set(hang=False)

    def _call(self, op: str, knobs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class VllmEmulator(_Controls):
    """The emulator on its own event loop in a daemon thread of this process."""

    def __init__(self, *, model: str = DEFAULT_MODEL, api_key: str | None = None, port: int = 0, **knobs: Any) -> None:
        self.service = Service(model=model, api_key=api_key, port=port, **knobs)
        self.model = model
        self.api_key = api_key
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> VllmEmulator:
        ready: Future[None] = Future()
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="vllm-emulator", daemon=True)
        self._thread.start()
        ready.result(timeout=30)
        return self

    def _run(self, ready: Future[None]) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.service.start())
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        self._loop.run_forever()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> VllmEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def url(self) -> str:  # type: ignore[override]
        return f"http://127.0.0.1:{self.service.port}"

    def _call(self, op: str, knobs: dict[str, Any]) -> dict[str, Any]:
        assert self._loop is not None, "start() the emulator first"

        async def run() -> dict[str, Any]:
            if op == "set":
                return await self.service.apply(knobs)
            if op == "reset":
                await self.service.reset()
            return self.service.stats()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)


class VllmEmulatorProcess(_Controls):
    """The emulator as `python -m tests.emulators.vllm`, driven over its control port."""

    def __init__(self, *, model: str = DEFAULT_MODEL, api_key: str | None = None, port: int = 0, **knobs: Any) -> None:
        unknown = set(knobs) - KNOBS
        if unknown:
            raise ValueError(f"unknown vLLM emulator knobs {sorted(unknown)}; known: {sorted(KNOBS)}")
        self.model, self.api_key, self._port, self.knobs = model, api_key, port, knobs
        self.process: subprocess.Popen[str] | None = None
        self.url = self.control_url = ""

    def start(self, timeout: float = 30.0) -> VllmEmulatorProcess:
        args = [sys.executable, "-m", "tests.emulators.vllm", "--port", str(self._port), "--model", self.model,
                "--knobs", json.dumps(self.knobs)]
        if self.api_key:
            args += ["--api-key", self.api_key]
        self.process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        assert self.process.stdout is not None
        line = _readline(self.process.stdout, timeout)
        if not line:
            raise RuntimeError(f"the vLLM emulator process exited ({self.process.poll()}) before it was ready")
        ready = json.loads(line)
        self.url, self.control_url = ready["url"], ready["control_url"]
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> VllmEmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def _call(self, op: str, knobs: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.control_url}/_emulator/{op}"
        response = httpx.get(url, timeout=30) if op == "stats" else httpx.post(url, json=knobs, timeout=30)
        if response.status_code == 400:
            raise ValueError(response.json()["error"])
        response.raise_for_status()
        return response.json()


def _readline(stream: Any, timeout: float) -> str:
    result: Future[str] = Future()
    threading.Thread(target=lambda: result.set_result(stream.readline()), daemon=True).start()
    return result.result(timeout=timeout)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _serve(args: argparse.Namespace, knobs: dict[str, Any]) -> None:
    import uvicorn
    from starlette.applications import Starlette

    service = Service(model=args.model, api_key=args.api_key, host=args.host, port=args.port, **knobs)
    await service.start()
    control = QuietServer(uvicorn.Config(Starlette(routes=service.control_routes()), host=args.host,
                                         port=args.control_port, lifespan="off", log_level="warning"))
    control_task = asyncio.create_task(control.serve())
    while not control.started:
        if control_task.done():
            control_task.result()
        await asyncio.sleep(0.01)
    control_port = control.servers[0].sockets[0].getsockname()[1]
    print(json.dumps({"url": f"http://{args.host}:{service.port}", "control_url": f"http://{args.host}:{control_port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    control.should_exit = control.force_exit = True
    await service.stop()
    await control_task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.vllm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--control-port", type=int, default=0, help="for /_emulator/*; stays up while the API is down")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--knobs", default="{}", help="more knobs as a JSON object")
    for name in ("max_num_seqs", "max_num_queued_reqs", "kv_tokens", "block_size", "max_model_len", "output_tokens"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, dest=name)
    for name in ("step_base", "step_per_seq", "prefill_tokens_per_s", "render_s"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, dest=name)
    args = parser.parse_args(argv)
    knobs = json.loads(args.knobs)
    knobs |= {name: getattr(args, name) for name in KNOBS if getattr(args, name, None) is not None}
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_serve(args, knobs))


if __name__ == "__main__":
    main()
