"""POST /v1/chat/completions of the vLLM emulator, in vLLM 0.32's order: the model is checked; admission is checked
(the preflight: HTTP 503); the request is rendered; admission is checked again as the request is added (a stream
has answered 200 by then, so that 503 comes as an SSE error event, as in vLLM); then the engine generates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse

from tests.emulators import vllm_shapes as shapes
from tests.emulators.vllm_engine import Request
from tests.emulators.vllm_prompt import BadRequest, plan_output, read_prompt

if TYPE_CHECKING:
    from tests.emulators.vllm_app import Service

GONE = 499  # what a handler returns when its client already left; nobody reads it


def json_response(body: Any, status: int = 200) -> Response:
    return Response(shapes.dumps(body), status, media_type="application/json")


def sse(lines: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(lines, media_type="text/event-stream")


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


class ChatCompletions:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.renderer = asyncio.Lock()  # vLLM renders multimodal requests one at a time

    async def handle(self, http: HttpRequest) -> Response:
        service, knobs, counts = self.service, self.service.knobs, self.service.counts
        counts["requests"] += 1
        try:
            body = await http.json()
        except ValueError as exc:
            counts["errors"] += 1
            return json_response(shapes.error(400, f"JSON decode error: {exc}", "Bad Request"), 400)
        if not isinstance(body, dict):
            counts["errors"] += 1
            return json_response(shapes.bad_request("the request body must be a JSON object"), 400)
        if knobs["fail_times"] > 0:
            knobs["fail_times"] -= 1
            counts["failed"] += 1
            return json_response(shapes.injected(int(knobs["fail_status"])), int(knobs["fail_status"]))
        if not service.released.is_set():
            counts["held"] += 1
            if not await self._unless_gone(http, service.released.wait()):
                return Response(status_code=GONE)
        if body.get("model") not in (None, "", service.model):
            counts["errors"] += 1
            return json_response(shapes.model_not_found(str(body["model"]), service.model), 404)
        if self._queue_full():
            return json_response(shapes.queue_full(), 503)
        try:
            request = self._plan(body)
        except BadRequest as exc:
            counts["errors"] += 1
            return json_response(shapes.bad_request(exc.message, exc.param), 400)
        if knobs["render_s"]:
            async with self.renderer:
                if not await self._unless_gone(http, asyncio.sleep(float(knobs["render_s"]))):
                    return Response(status_code=GONE)
        if self._queue_full():
            if body.get("stream"):
                return sse(_lines(shapes.stream_error(shapes.queue_full()), shapes.DONE))
            return json_response(shapes.queue_full(), 503)
        if knobs["slow"]:
            service.engine.preparing += 1  # added, so counted in flight, but not in the engine's queue yet
            try:
                if not await self._unless_gone(http, asyncio.sleep(float(knobs["slow"]))):
                    return Response(status_code=GONE)
            finally:
                service.engine.preparing -= 1
        service.engine.submit(request)
        if body.get("stream"):
            return sse(self._stream(request, bool((body.get("stream_options") or {}).get("include_usage"))))
        try:
            finished = await self._unless_gone(http, self._drain(request))
        finally:
            service.engine.abort(request)
        if not finished or request.finished == "abort":
            counts["aborted"] += 1
            return json_response(shapes.injected(500), 500) if finished else Response(status_code=GONE)
        counts["completed"] += 1
        return json_response(shapes.completion(request.id, shapes.now(), service.model, request.text, request.finished or "stop",
                                               request.prompt_tokens, request.generated, service.fingerprint))

    def _queue_full(self) -> bool:
        service = self.service
        cap = service.config.max_num_queued_reqs
        if cap is None or service.engine.inflight + 1 <= cap:
            return False
        service.counts["rejected_503"] += 1
        service.metrics.count("vllm:admission_rejections", 1, "max_num_queued_reqs")
        return True

    def _plan(self, body: dict[str, Any]) -> Request:
        prompt = read_prompt(body.get("messages"))
        limit = self.service.config.max_model_len
        if prompt.tokens > limit:
            raise BadRequest(
                f"This model's maximum context length is {limit} tokens. However, your prompt contains {prompt.tokens} "
                "input tokens, which exceeds this limit even without any output tokens. Please reduce the length of "
                f"the input prompt. (parameter=input_tokens, value={prompt.tokens})", "input_tokens")
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        if asked is not None and (not isinstance(asked, int) or asked < 1):
            raise BadRequest(f"max_tokens must be at least 1, got {asked}.", "max_tokens")
        max_tokens = min(limit - prompt.tokens, asked or limit)
        knobs = self.service.knobs
        tokens, finish = plan_output(prompt, max_tokens, knobs["output_tokens"], bool(knobs["repeat"]))
        return Request(f"chatcmpl-{shapes.random_uuid()}", prompt.tokens, tokens, finish, max_tokens, asked)

    @staticmethod
    async def _drain(request: Request) -> None:
        while await request.events.get() is not None:
            pass

    @staticmethod
    async def _unless_gone(http: HttpRequest, work: Awaitable[Any]) -> bool:
        """Run `work` unless the client leaves first (vLLM's with_cancellation); True if it finished."""
        task = asyncio.ensure_future(work)

        async def disconnected() -> None:
            while (await http.receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(disconnected())
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        watcher.cancel()
        if not task.done():
            task.cancel()
            return False
        task.result()
        return True

    async def _stream(self, request: Request, include_usage: bool) -> AsyncIterator[str]:
        service = self.service
        created, rid, model = shapes.now(), request.id, service.model
        try:
            item = await request.events.get()
            if item is None:
                return  # cut off before its first token: the connection goes with it
            yield shapes.role_chunk(rid, created, model)
            while item is not None:
                # the engine queues a request's last token and its end (None) in the same step
                last = request.finished not in (None, "abort") and request.events.qsize() == 1
                fingerprint = service.fingerprint if last and not include_usage else None
                yield shapes.token_chunk(rid, created, model, item, request.finished if last else None, fingerprint)
                item = await request.events.get()
            if request.finished == "abort":
                return
            if include_usage:
                yield shapes.usage_chunk(rid, created, model, request.prompt_tokens, request.generated, service.fingerprint)
            yield shapes.DONE
            service.counts["completed"] += 1
        finally:
            if request.finished in (None, "abort"):
                service.counts["aborted"] += 1
            service.engine.abort(request)
