"""One chat.completions request to one vLLM server: streamed, stopped early when the model loops."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import httpx
import openai


class Overloaded(Exception):
    """vLLM refused the request for now (503: its queue is full). Back-pressure, not a failure."""


class ServerFailed(Exception):
    """The server did not answer properly (timeout, connection refused, 5xx): counts against its circuit."""


class RequestRejected(Exception):
    """The server answered 4xx: the request itself is wrong (model name, API key, image)."""


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    stopped_repeating: bool
    seconds: float


def repeated_tail(text: str, *, min_repeats: int = 8, max_period: int = 200, min_span: int = 64) -> int | None:
    """Where to cut `text` if it ends in a loop: the length that keeps one copy of the repeated unit.

    A unit of p characters counts as a loop when it repeats at least max(min_repeats, min_span / p)
    times in a row, so a dotted leader or a table rule of honest length is not mistaken for one.
    """
    n = len(text)
    for period in range(1, min(max_period, n // min_repeats) + 1):
        needed = max(min_repeats, math.ceil(min_span / period))
        if period * needed > n:
            continue
        unit = text[n - period:]
        count, end = 1, n - period
        while end >= period and text[end - period:end] == unit:
            count += 1
            end -= period
            if count >= needed:
                break
        if count >= needed:
            while end >= period and text[end - period:end] == unit:
                count += 1
                end -= period
            return n - period * (count - 1)
    return None


class VllmClient:
    """Talks to one server (base URL without /v1). Thread-safe; one connection pool per server."""

    def __init__(self, url: str, *, model: str, api_key: str = "", timeout: float = 120.0, stop_repeats: bool = True) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.stop_repeats = stop_repeats
        self._client = openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=api_key or "EMPTY",
            max_retries=0,  # retries are the limiter's business: a retry must take a permit again
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            http_client=httpx.Client(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)),
        )

    def complete(self, image_url: str, prompt: str, *, max_tokens: int, repetition_penalty: float = 1.0) -> Answer:
        started = time.monotonic()
        deadline = started + self.timeout
        messages = [
            {"role": "system", "content": ""},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": prompt}]},
        ]
        try:
            stream = self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                temperature=0.0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"repetition_penalty": repetition_penalty, "skip_special_tokens": True},
            )
            parts: list[str] = []
            length, checked, looped = 0, 0, False
            prompt_tokens = completion_tokens = 0
            with stream:
                for chunk in stream:
                    if chunk.usage is not None:
                        prompt_tokens, completion_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                    for choice in chunk.choices:
                        piece = choice.delta.content or ""
                        if piece:
                            parts.append(piece)
                            length += len(piece)
                    if self.stop_repeats and length - checked >= 32:
                        checked = length
                        text = "".join(parts)
                        cut = repeated_tail(text[-4000:])
                        if cut is not None:
                            parts, looped = [text[: len(text) - min(4000, len(text)) + cut]], True
                            break  # closing the stream aborts the request inside vLLM too
                    if time.monotonic() > deadline:
                        raise ServerFailed(f"{self.url}: no complete answer within {self.timeout:g} s")
        except openai.APIStatusError as exc:
            if exc.status_code == 503:
                raise Overloaded(f"{self.url}: {_message(exc)}") from None
            if exc.status_code >= 500 or exc.status_code == 429:
                raise ServerFailed(f"{self.url}: HTTP {exc.status_code}: {_message(exc)}") from None
            raise RequestRejected(f"{self.url}: HTTP {exc.status_code}: {_message(exc)}") from None
        except (openai.APIConnectionError, openai.APITimeoutError, httpx.HTTPError) as exc:
            raise ServerFailed(f"{self.url}: {type(exc).__name__}: {exc}") from None
        except openai.APIError as exc:
            # An error event inside a 200 stream: vLLM admits a request, renders its image, and only
            # then finds its queue full; the event carries the status the plain answer would have had.
            code = exc.body.get("code") if isinstance(exc.body, dict) else None
            if code == 503:
                raise Overloaded(f"{self.url}: {exc.message}") from None
            raise ServerFailed(f"{self.url}: error in the answer stream: {exc.message}") from None
        text = "".join(parts)
        if self.stop_repeats and not looped:
            cut = repeated_tail(text)
            if cut is not None:
                text, looped = text[:cut], True
        return Answer(text, prompt_tokens, completion_tokens, looped, time.monotonic() - started)

    def close(self) -> None:
        self._client.close()


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if body.get("message"):
            return str(body["message"])[:300]
    return str(exc)[:300]
