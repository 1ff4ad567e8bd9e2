"""HunyuanOCR served by vLLM, under one limit shared by every worker on every machine.

Each page of an image takes a permit (`ocr_core.limits.leases`) sized by its estimated KV need,
then one streamed chat.completions request. vLLM's 503 is back-pressure: the permit goes back and
the page waits its turn again, without spending the job's retries. Timeouts and 5xx count against
the server's circuit breaker; while no server takes requests the job either waits (`Deferred`: it
goes back to Redis and runs later) or is read by the fallback engine, and the result says which.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time

import redis
from PIL import Image

from ocr_core.engines import PageReading, ReadRequest, get_engine
from ocr_core.errors import Deferred, ImageError, TransientError
from ocr_core.job import Line
from ocr_core.limits.leases import NoServer, Permits, PermitTimeout
from ocr_core.tiling import read_tiled
from ocr_core.vllm import servers
from ocr_core.vllm.client import Overloaded, RequestRejected, ServerFailed, VllmClient
from ocr_core.vllm.controller import Controller, Policy
from ocr_core.vllm.pages import Page, join_pages, pages
from ocr_core.vllm.prompts import prompt_for
from ocrhub.settings import Settings, get_settings

log = logging.getLogger(__name__)

PROMPT_TOKENS = 64  # chat template and instruction, roughly
FAILED_ATTEMPTS = 3  # failed requests (on any server) before the job is handed to RQ's retries


def policy_for(settings: Settings) -> Policy:
    auto = settings.vllm_concurrency == "auto"
    return Policy(
        auto=auto,
        fixed=16 if auto else int(settings.vllm_concurrency),
        min_limit=settings.vllm_min_concurrency,
        max_limit=max(settings.vllm_min_concurrency, settings.vllm_max_concurrency),
        start=min(settings.vllm_max_concurrency, max(settings.vllm_min_concurrency, 4)),
        kv_tokens=settings.vllm_kv_tokens,
    )


def configuration_problems(settings: Settings) -> list[str]:
    """What would stop every worker on the vllm engine, said once by `ocrhub up` before it starts them."""
    from ocr_core.engines import ENGINES

    problems = []
    if not settings.vllm_urls:
        problems.append("OCRHUB_OCR_ENGINE=vllm needs OCRHUB_VLLM_URLS (e.g. http://vllm:8000; `ocrhub vllm-command` prints how to start one)")
    fallback = settings.vllm_fallback
    if fallback != "wait" and (fallback == "vllm" or (fallback not in ENGINES and ":" not in fallback)):
        problems.append(f"OCRHUB_VLLM_FALLBACK: {fallback!r} is neither 'wait' nor another engine ({', '.join(sorted(set(ENGINES) - {'vllm'}))})")
    return problems


class VllmEngine:
    name = "vllm"

    def __init__(self, threads: int = 0, *, settings: Settings | None = None, conn: redis.Redis | None = None) -> None:
        self.settings = settings or get_settings()
        problems = configuration_problems(self.settings)
        if problems:
            raise ValueError("; ".join(problems))
        if conn is None:
            from ocrhub.runtime import connect

            try:
                conn = connect(self.settings)
            except RuntimeError as exc:  # the permits are shared through Redis: no Redis, no engine
                raise ValueError(f"the vllm engine shares its limit through Redis: {exc}") from None
        self.conn = conn
        self.threads = threads
        key = self.settings.vllm_api_key.get_secret_value()
        self.policy = policy_for(self.settings)
        # The controller registers the servers; the clients are keyed by the ids it gave them.
        self.controller = Controller(conn, self.settings.vllm_urls, self.policy, model=self.settings.vllm_model, api_key=key)
        self.clients = {
            sid: VllmClient(url, model=self.settings.vllm_model, api_key=key, timeout=self.settings.vllm_timeout,
                            stop_repeats=self.settings.vllm_stop_repeats)
            for sid, url in self.controller.ids.items()
        }
        self.permits = Permits(conn, list(self.clients))
        self._stop = threading.Event()
        self._controller = threading.Thread(target=self.controller.run, args=(self._stop,), name="ocrhub-vllm-controller", daemon=True)
        self._controller.start()
        atexit.register(self.close)  # stop the controller before interpreter exit freezes it mid-request

    def close(self) -> None:
        self._stop.set()
        self.permits.close()
        if self._controller is not threading.current_thread():
            self._controller.join(timeout=3.0)

    def warm_up(self) -> None:
        """Nothing to load: say which servers answer, without failing a worker whose server is still starting."""
        for sid, client in self.clients.items():
            state = servers.read(self.conn, sid)
            log.info("vLLM %s: limit %d (%s), circuit %s", client.url, state.limit, state.reason, state.state)

    # -- reading -------------------------------------------------------------------------------
    def read(self, image: Image.Image, request: ReadRequest) -> PageReading:
        prompt = prompt_for(request.task)
        texts = []
        try:
            for page in pages(image, self.settings.vllm_max_side):
                text = self._read_page(page, prompt, request)
                texts.append(text)
        except NoServer as exc:
            return self._fall_back(image, request, str(exc))
        text = join_pages(texts) if len(texts) > 1 else (texts[0] if texts else "")
        lines = _lines(text, (0, 0, image.width, image.height))
        return PageReading(lines, self.name)

    def _read_page(self, page: Page, prompt: str, request: ReadRequest) -> str:
        cost = page.tokens + PROMPT_TOKENS + self.settings.vllm_max_tokens
        image_url = page.data_url()
        failures, failed_on, backoff = [], set(), 0.2
        while True:
            others = [sid for sid in self.clients if sid not in failed_on]
            try:
                # A retry goes to another server while there is one.
                lease = self.permits.acquire(cost, request.fair_key, request.deadline, servers=others or None)
            except PermitTimeout as exc:
                raise Deferred(f"every vLLM permit stayed busy: {exc}", delay=5.0) from None
            client = self.clients[lease.server]
            try:
                answer = client.complete(image_url, prompt, max_tokens=self.settings.vllm_max_tokens)
            except Overloaded as exc:
                self.permits.release(lease, "reject")
                log.info("vLLM back-pressure: %s", exc)
                if time.monotonic() + backoff >= request.deadline:
                    raise Deferred(f"vLLM kept refusing requests (503): {exc}", delay=5.0) from None
                time.sleep(backoff * random.uniform(0.5, 1.5))  # jitter: the refused do not come back together
                backoff = min(backoff * 2, 5.0)
                continue
            except ServerFailed as exc:
                self.permits.release(lease, "fail")
                failures.append(str(exc))
                failed_on.add(lease.server)
                log.warning("vLLM request failed: %s", exc)
                if len(failures) >= FAILED_ATTEMPTS:
                    raise TransientError("vLLM requests failed: " + "; ".join(failures)) from None
                continue
            except RequestRejected as exc:
                self.permits.release(lease, "none")
                if exc.status in (401, 403):
                    raise TransientError(f"vLLM refused the API key (check OCRHUB_VLLM_API_KEY): {exc}") from None
                if exc.status == 404:
                    raise TransientError(f"vLLM does not serve that model (check OCRHUB_VLLM_MODEL): {exc}") from None
                # The request itself: this image (too large for the model's context, unreadable); sinks hear why.
                raise ImageError(f"the OCR model refused this image: {exc}") from None
            except BaseException:
                self.permits.release(lease, "none")  # a job timeout or a stop: not the server's fault
                raise
            self.permits.release(lease, "ok")
            return answer.text

    def _fall_back(self, image: Image.Image, request: ReadRequest, why: str) -> PageReading:
        fallback = self.settings.vllm_fallback
        if fallback == "wait":
            # Nothing lost: the job goes back to Redis and waits there, not in a worker thread.
            raise Deferred(f"no vLLM server takes requests ({why}); the job waits in the queue", delay=10.0)
        engine = get_engine(fallback, self.threads)
        log.warning("no vLLM server takes requests (%s): reading with %s", why, engine.name)
        lines = read_tiled(image, engine.recognise, tile_size=self.settings.tile_size, overlap=self.settings.tile_overlap)
        return PageReading(list(lines), engine.name)


def _lines(text: str, box: tuple[int, int, int, int]) -> list[Line]:
    """The model answers text, not boxes: each line gets its share of the image's height, in order."""
    rows = [row for row in text.splitlines() if row.strip()]
    left, top, right, bottom = box
    step = (bottom - top) / max(1, len(rows))
    result = []
    for index, row in enumerate(rows):
        y0, y1 = top + index * step, top + (index + 1) * step
        result.append(Line(text=row.rstrip(), box=((left, y0), (right, y0), (right, y1), (left, y1)), score=1.0))
    return result
