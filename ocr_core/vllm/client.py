"""One chat.completions request to one vLLM server: streamed, stopped early when the model loops."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


class Overloaded(Exception):
    """vLLM refused the request for now (503: its queue is full). Back-pressure, not a failure."""


class ServerFailed(Exception):
    """The server did not answer properly (timeout, connection refused, 5xx): counts against its circuit."""


class RequestRejected(Exception):
    """The server answered 4xx: the request itself is wrong (model name, API key, image)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


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
    """Talks to one server (base URL without /v1) in vLLM's OpenAI-compatible protocol. Thread-safe.

    Plain httpx and json rather than the openai package: building a typed object for every streamed
    token cost a worker about half a millisecond each, more CPU than everything else it does per image.
    """

    def __init__(self, url: str, *, model: str, api_key: str = "", timeout: float = 120.0, stop_repeats: bool = True) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.stop_repeats = stop_repeats
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    def complete(self, image_url: str, prompt: str, *, max_tokens: int, repetition_penalty: float = 1.0) -> Answer:
        started = time.monotonic()
        deadline = started + self.timeout
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": ""},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": prompt}]},
            ],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "repetition_penalty": repetition_penalty,
            "skip_special_tokens": True,
        }
        parts: list[str] = []
        length, checked, looped = 0, 0, False
        prompt_tokens = completion_tokens = 0
        try:
            # Leaving the block early closes the connection, which aborts the request inside vLLM too.
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise _status_error(self.url, response.status_code, _message(response))
                for line in _sse_data(response):
                    if line == b"[DONE]":
                        break
                    chunk = json.loads(line)
                    error = chunk.get("error")
                    if error:
                        # An error event inside a 200 stream: vLLM admits a request, renders its image,
                        # and only then may find its queue full; the event carries the status.
                        status = error.get("code") if isinstance(error, dict) else None
                        raise _status_error(self.url, status if isinstance(status, int) else 500, _text(error), in_stream=True)
                    usage = chunk.get("usage")
                    if usage:
                        prompt_tokens, completion_tokens = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
                    for choice in chunk.get("choices") or ():
                        piece = (choice.get("delta") or {}).get("content") or ""
                        if piece:
                            parts.append(piece)
                            length += len(piece)
                    if self.stop_repeats and length - checked >= 32:
                        checked = length
                        text = "".join(parts)
                        cut = repeated_tail(text[-4000:])
                        if cut is not None:
                            parts, looped = [text[: len(text) - min(4000, len(text)) + cut]], True
                            break
                    if time.monotonic() > deadline:
                        raise ServerFailed(f"{self.url}: no complete answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            raise ServerFailed(f"{self.url}: {type(exc).__name__}: {exc or 'no answer'}") from None
        except ValueError as exc:  # a line that is not JSON: not a vLLM answer
            raise ServerFailed(f"{self.url}: unreadable answer stream: {exc}") from None
        text = "".join(parts)
        if self.stop_repeats and not looped:
            cut = repeated_tail(text)
            if cut is not None:
                text, looped = text[:cut], True
        return Answer(text, prompt_tokens, completion_tokens, looped, time.monotonic() - started)

    def close(self) -> None:
        self._http.close()


def _sse_data(response: httpx.Response) -> Iterator[bytes]:
    """The `data:` payloads of an event stream, split from raw reads (httpx's text and line
    decoders cost more per token than the rest of the request)."""
    pending = b""
    for raw in response.iter_raw():
        pending += raw
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
    if pending.startswith(b"data:"):
        yield pending[5:].strip()


def _status_error(url: str, status: int, message: str, *, in_stream: bool = False) -> Exception:
    where = "in the answer stream" if in_stream else f"HTTP {status}"
    if status == 503:
        return Overloaded(f"{url}: {message}")
    if status >= 500 or status == 429:
        return ServerFailed(f"{url}: {where}: {message}")
    return RequestRejected(f"{url}: HTTP {status}: {message}", status)


def _message(response: httpx.Response) -> str:
    try:
        return _text(response.json())
    except ValueError:
        return response.text[:300] or response.reason_phrase


def _text(body: object) -> str:
    """vLLM's error text: {"error": {"message": …}}, {"error": "…"} or {"message": …}."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if isinstance(inner, str):
            return inner[:300]
        if body.get("message"):
            return str(body["message"])[:300]
    return str(body)[:300]
