"""The vLLM emulator's server inside its event loop: vLLM's HTTP routes over the engine, the knobs, and the
listening socket that the `down` knob closes (connections refused) and reopens on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
from collections import Counter
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tests.emulators import vllm_shapes as shapes
from tests.emulators.vllm_chat import ChatCompletions, json_response
from tests.emulators.vllm_engine import Engine, EngineConfig
from tests.emulators.vllm_metrics import Metrics, cache_config

GUARDED_PREFIX = ("/v1", "/v2", "/inference", "/cohere")
METRICS_CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"
FAULTS: dict[str, Any] = {"down": False, "health_status": 200, "fail_status": 500, "fail_times": 0, "slow": 0.0, "hang": False}
# render_s: the API server's time to render a request (image decode, HF processor, tokenizer), one request at a time
# as in vLLM's single multimodal render worker; rendering requests do not count against max_num_queued_reqs yet.
SERVING: dict[str, Any] = {"output_tokens": None, "repeat": False, "render_s": 0.0}
KNOBS = EngineConfig.names() | FAULTS.keys() | SERVING.keys()


class QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the emulator owns its process's signals (or shares the test's)
        yield


class Service:
    """One emulated server: engine, metrics, knobs and the HTTP side; it lives on one event loop."""

    def __init__(self, *, model: str, api_key: str | None = None, host: str = "127.0.0.1", port: int = 0, **knobs: Any) -> None:
        unknown = set(knobs) - KNOBS
        if unknown:
            raise ValueError(f"unknown vLLM emulator knobs {sorted(unknown)}; known: {sorted(KNOBS)}")
        self.model, self.api_key, self.host, self.port = model, api_key, host, port
        self.initial = dict(knobs)
        self.config = EngineConfig(**{k: v for k, v in knobs.items() if k in EngineConfig.names()})
        self.metrics = Metrics(model, self.config.max_model_len)
        self.knobs = {**FAULTS, **SERVING}
        self.counts: Counter[str] = Counter()
        self.created = shapes.now()
        self.fingerprint = shapes.fingerprint(model, self.config.max_model_len)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", ChatCompletions(self).handle, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
                Route("/version", self.version, methods=["GET"]),
                *self.control_routes(),
            ],
            exception_handlers={HTTPException: self.http_error},
        )
        self._server: QuietServer | None = None
        self._serve_task: asyncio.Task[None] | None = None

    def control_routes(self) -> list[Route]:
        async def set_(request: HttpRequest) -> Response:
            try:
                return json_response(await self.apply(await request.json()))
            except (ValueError, TypeError) as exc:
                return json_response({"error": str(exc)}, 400)

        async def stats(_: HttpRequest) -> Response:
            return json_response(self.stats())

        async def reset(_: HttpRequest) -> Response:
            await self.reset()
            return json_response(self.stats())

        return [Route("/_emulator/set", set_, methods=["POST"]), Route("/_emulator/stats", stats, methods=["GET"]),
                Route("/_emulator/reset", reset, methods=["POST"])]

    # -- lifecycle and knobs ----------------------------------------------------------------------

    async def start(self) -> None:
        self.engine = Engine(self.config, self.metrics)
        self.released = asyncio.Event()  # cleared while `hang` holds chat requests
        self.released.set()
        self._engine_task = asyncio.create_task(self.engine.run())
        await self.apply({k: v for k, v in self.initial.items() if k not in EngineConfig.names()})
        if self._server is None and not self.knobs["down"]:
            await self._up()

    async def stop(self) -> None:
        await self._down()
        self._engine_task.cancel()
        self.released.set()

    async def apply(self, knobs: dict[str, Any]) -> dict[str, Any]:
        """Change knobs live; returns them all."""
        unknown = set(knobs) - KNOBS
        if unknown:
            raise ValueError(f"unknown vLLM emulator knobs {sorted(unknown)}; known: {sorted(KNOBS)}")
        if "fail_status" in knobs and "fail_times" not in knobs:
            knobs = {**knobs, "fail_times": 1}
        for name, value in knobs.items():
            if name in EngineConfig.names():
                setattr(self.config, name, value)
            else:
                self.knobs[name] = value
        if "hang" in knobs:
            (self.released.clear if knobs["hang"] else self.released.set)()
        if "down" in knobs:
            await (self._down() if knobs["down"] else self._up())
        self.engine.poke()
        return self.current_knobs()

    def current_knobs(self) -> dict[str, Any]:
        return {**{name: getattr(self.config, name) for name in sorted(EngineConfig.names())}, **self.knobs}

    async def reset(self) -> None:
        """Counts, peaks, timeline and Prometheus counters to zero; fault knobs back to normal."""
        await self.apply({k: v for k, v in FAULTS.items()})
        self.counts.clear()
        self.metrics.reset()
        self.engine.reset_peaks()

    def stats(self) -> dict[str, Any]:
        engine = self.engine
        return {
            **{k: self.counts[k] for k in ("requests", "completed", "rejected_503", "failed", "errors", "aborted", "held")},
            "preemptions": int(self.metrics.counters[("vllm:num_preemptions", "")]),
            "prompt_tokens": int(self.metrics.counters[("vllm:prompt_tokens", "")]),
            "generation_tokens": int(self.metrics.counters[("vllm:generation_tokens", "")]),
            "running": len(engine.running), "waiting": len(engine.waiting), "inflight": engine.inflight,
            "peak_running": engine.peak_running, "peak_inflight": engine.peak_inflight,
            "kv_blocks_used": engine.used_blocks, "kv_blocks_total": self.config.total_blocks,
            "steps": engine.steps, "timeline": [list(sample) for sample in engine.timeline],
            "up": self._server is not None, "port": self.port, "knobs": self.current_knobs(),
        }

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    async def _up(self) -> None:
        if self._server is not None:
            return
        config = uvicorn.Config(self, lifespan="off", log_level="warning", access_log=False)
        self._server = QuietServer(config)
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[self._socket()]))
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()
            await asyncio.sleep(0.005)

    async def _down(self) -> None:
        """An outage: stop listening, cut every open connection, lose the work in flight."""
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = server.force_exit = True
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        self.engine.abort_all()
        if self._serve_task is not None:
            await self._serve_task

    # -- HTTP -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self.api_key and scope.get("method") != "OPTIONS"
                and scope["path"].startswith(GUARDED_PREFIX) and not self._authorized(scope)):
            await JSONResponse(shapes.UNAUTHORIZED, 401)(scope, receive, send)  # outside CORS, as in vLLM
            return
        origin = dict(scope.get("headers", [])).get(b"origin")

        async def cors(message: Message) -> None:  # starlette's CORSMiddleware with vLLM's allow-all defaults
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if origin is not None:
                    headers["access-control-allow-origin"] = "*"
                headers.append("vary", "Origin")
            await send(message)

        await self.app(scope, receive, cors)

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), (self.api_key or "").encode())

    async def http_error(self, _: HttpRequest, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return json_response({"detail": exc.detail}, exc.status_code)  # FastAPI's answer for unknown routes and methods

    async def version(self, _: HttpRequest) -> Response:
        return json_response({"version": shapes.VERSION})

    async def health(self, _: HttpRequest) -> Response:
        return Response(status_code=int(self.knobs["health_status"]))

    async def models(self, _: HttpRequest) -> Response:
        return JSONResponse(shapes.model_list(self.model, self.model, self.config.max_model_len, self.created))

    async def prometheus(self, _: HttpRequest) -> Response:
        engine, cfg = self.engine, self.config
        gauges = {
            "vllm:num_requests_running": len(engine.running),
            "vllm:num_requests_waiting": len(engine.waiting),
            "vllm:num_requests_waiting_by_reason": {"capacity": len(engine.waiting)},
            "vllm:engine_sleep_state": {"awake": 1},
            "vllm:kv_cache_usage_perc": engine.used_blocks / cfg.total_blocks if cfg.total_blocks else 0.0,
        }
        text = self.metrics.render(gauges, cache_config(cfg.block_size, cfg.total_blocks, cfg.max_model_len))
        return Response(text, media_type=METRICS_CONTENT_TYPE)
