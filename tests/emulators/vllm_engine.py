"""The engine half of the vLLM emulator: continuous batching over timed steps, as vLLM's v1 scheduler does it.

Each step every running request emits one token. A step lasts
    step_base + step_per_seq * running + (prompt tokens prefilled in this step) / prefill_tokens_per_s
so throughput grows with the batch until `max_num_seqs` caps it. Before a step, running requests are
scheduled first: each needs KV blocks for its prompt, its generated tokens and the one being produced;
when they do not fit in `kv_tokens`, the most recently admitted request is preempted (its blocks freed,
it goes back to the front of the waiting queue and its prompt and output are recomputed later). Waiting
requests are admitted FIFO, stopping at the first one that does not fit, and not in a step that preempted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field, fields

from tests.emulators.vllm_metrics import Metrics

UNLIMITED_KV_TOKENS = 1 << 20  # what the gauges divide by when no budget is set


@dataclass
class EngineConfig:
    max_num_seqs: int = 256
    max_num_queued_reqs: int | None = None  # in-flight cap (waiting + running), as vLLM counts it
    kv_tokens: int | None = None  # None: unlimited
    block_size: int = 16
    step_base: float = 0.01
    step_per_seq: float = 0.001
    prefill_tokens_per_s: float = 20000.0
    max_model_len: int = 32768

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @property
    def total_blocks(self) -> int:
        return (self.kv_tokens if self.kv_tokens is not None else UNLIMITED_KV_TOKENS) // self.block_size


@dataclass(eq=False)
class Request:
    """One chat completion inside the engine; `events` yields token texts, then None when finished."""

    id: str
    prompt_tokens: int
    output: list[str]
    finish_reason: str  # once every token of `output` is out
    max_tokens: int  # the effective cap
    max_tokens_param: int | None = None  # what the client asked for
    arrival: float = field(default_factory=time.monotonic)
    events: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    generated: int = 0
    blocks: int = 0
    first_scheduled: float | None = None
    scheduled: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    finished: str | None = None  # the finish reason once done ("abort" when cut off)
    preemptions: int = 0

    @property
    def text(self) -> str:
        return "".join(self.output[: self.generated])


class Engine:
    def __init__(self, config: EngineConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.preparing = 0  # accepted requests not yet in the waiting queue (held by `slow`)
        self._wake = asyncio.Event()
        self.t0 = time.monotonic()
        self.timeline: deque[tuple[float, int, int]] = deque(maxlen=5000)
        self.peak_running = 0
        self.peak_inflight = 0
        self.steps = 0

    # -- what the HTTP side calls -----------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self.waiting) + len(self.running) + self.preparing

    @property
    def used_blocks(self) -> int:
        return sum(r.blocks for r in self.running)

    def submit(self, request: Request) -> None:
        self.waiting.append(request)
        self._note()
        self._wake.set()

    def abort(self, request: Request) -> None:
        """Drop a request the client gave up on (or that an outage ended); its slot and blocks are freed."""
        if request.finished is not None:
            return
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        request.blocks = 0
        request.finished = "abort"
        request.events.put_nowait(None)
        self._note()

    def abort_all(self) -> None:
        for request in [*self.running, *self.waiting]:
            self.abort(request)

    def reset_peaks(self) -> None:
        self.peak_running = len(self.running)
        self.peak_inflight = len(self.running) + len(self.waiting)
        self.t0 = time.monotonic()
        self.timeline.clear()
        self._note()

    def poke(self) -> None:
        """Re-run admission after a live change of the limits."""
        self._wake.set()

    # -- the scheduler loop -----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._wake.clear()
            now = time.monotonic()
            preempted = self._make_room()
            admitted = [] if preempted else self._admit(now)
            if not self.running:
                await self._wake.wait()  # nothing fits right now: wait for a change of limits or an abort
                continue
            self._note()
            cfg = self.config
            prefill = sum(r.prompt_tokens + r.generated for r in admitted)
            await asyncio.sleep(cfg.step_base + cfg.step_per_seq * len(self.running) + prefill / cfg.prefill_tokens_per_s)
            self._emit(time.monotonic(), prefill)

    def _need(self, request: Request) -> int:
        return math.ceil((request.prompt_tokens + request.generated + 1) / self.config.block_size)

    def _make_room(self) -> bool:
        total = self.config.total_blocks
        preempted = False
        while self.running and sum(self._need(r) for r in self.running) > total:
            if len(self.running) == 1:
                self._finish(self.running[0], "length")  # alone and still too long: its context is full
                break
            victim = self.running.pop()
            victim.blocks = 0
            victim.scheduled = None
            victim.preemptions += 1
            self.waiting.appendleft(victim)
            self.metrics.count("vllm:num_preemptions")
            preempted = True
        for request in self.running:
            request.blocks = self._need(request)
        return preempted

    def _admit(self, now: float) -> list[Request]:
        admitted: list[Request] = []
        used, total = self.used_blocks, self.config.total_blocks
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            head = self.waiting[0]
            need = self._need(head)
            if used + need > total:
                if not self.running and not admitted:
                    self.waiting.popleft()
                    self._finish(head, "length")  # could never fit: vLLM refuses such prompts up front
                    continue
                break
            self.waiting.popleft()
            head.blocks, head.scheduled = need, now
            if head.first_scheduled is None:
                head.first_scheduled = now
            used += need
            self.running.append(head)
            admitted.append(head)
        return admitted

    def _emit(self, now: float, prefill_tokens: int) -> None:
        self.steps += 1
        tokens = 0
        for request in list(self.running):
            token = request.output[request.generated]
            request.generated += 1
            tokens += 1
            if request.first_token is None:
                request.first_token = now
                self.metrics.started(request)
            else:
                self.metrics.observe("vllm:inter_token_latency_seconds", now - (request.last_token or now))
            request.last_token = now
            request.events.put_nowait(token)
            if request.generated >= len(request.output):
                self._finish(request, request.finish_reason, now)
        self.metrics.count("vllm:generation_tokens", tokens)
        self.metrics.observe("vllm:iteration_tokens_total", prefill_tokens + tokens)
        self._note()

    def _finish(self, request: Request, reason: str, now: float | None = None) -> None:
        now = now if now is not None else time.monotonic()
        if request in self.running:
            self.running.remove(request)
        request.blocks = 0
        request.finished = reason
        request.events.put_nowait(None)
        self.metrics.finished(request, now)
        self._note()

    def _note(self) -> None:
        running, waiting = len(self.running), len(self.waiting)
        self.peak_running = max(self.peak_running, running)
        self.peak_inflight = max(self.peak_inflight, running + waiting)
        t = round(time.monotonic() - self.t0, 4)
        if self.timeline:
            last_t, last_running, last_waiting = self.timeline[-1]
            if (last_running, last_waiting) == (running, waiting):
                return
            if t - last_t < 0.02 and len(self.timeline) > 1:
                self.timeline[-1] = (last_t, running, waiting)  # at most one sample per 20 ms; peaks are kept apart
                return
        self.timeline.append((t, running, waiting))
