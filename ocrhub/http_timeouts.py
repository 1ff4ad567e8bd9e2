"""How long a client may take to send a request: OCRHUB_REQUEST_TIMEOUT for its headers, and again for its body.

uvicorn bounds only the idle time between requests (`timeout_keep_alive`): a client that opens a
connection and sends nothing, sends its headers a byte at a time, or sends a body shorter than its
Content-Length holds the connection, and an app waiting on the body, for ever. Two layers close that:

- `BodyDeadline` (ASGI): an app reading the body past the deadline gets `BodyTimeout`, and the
  client a 408 that closes the connection;
- `DeadlineHttpToolsProtocol` (uvicorn's httptools protocol): the connection itself is closed once
  the headers are late, or once the body is later than the ASGI deadline (an app that never reads
  the body, or one stuck elsewhere); header bytes of one request are bounded too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from asyncio import TimerHandle
from typing import Any, ClassVar

import uvicorn
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

# The connection outlives the ASGI deadline by this much, so the app's 408 goes out first.
CLOSE_GRACE_S = 1.0
# Request line and headers of one request; real clients send a few KB (uvicorn's h11 default is 16 KB).
MAX_HEADER_BYTES = 64 * 1024
# Idle time between two requests on one connection (uvicorn's default).
KEEP_ALIVE_S = 5


class BodyTimeout(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request body was not received within {seconds:g} s (OCRHUB_REQUEST_TIMEOUT)")


class BodyDeadline:
    """ASGI middleware: the whole body must arrive within `seconds` of the request reaching the app."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        body_done = False
        response_started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                # After the body, receive() only waits for a disconnect: no deadline there.
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.seconds) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except BodyTimeout as exc:
            log.info("%s %s: %s", scope.get("method"), scope.get("path"), exc)
            if not response_started:
                await _send_408(send, str(exc))
        except ClientDisconnect:
            log.info("%s %s: the client went away before sending its whole body", scope.get("method"), scope.get("path"))


async def _send_408(send: Send, reason: str) -> None:
    body = json.dumps({"detail": reason}).encode()
    await send({
        "type": "http.response.start",
        "status": 408,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers and body and a cap on header bytes.

    Use `protocol_with_deadlines(seconds)` for a class with the time set."""

    request_timeout: ClassVar[float] = 30.0

    _deadline: TimerHandle | None = None
    _awaiting = "nothing"  # headers | body | nothing
    _header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte is a request whose headers are late.
        self._arm("headers", self.request_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # httptools buffers a header until its end, however long: count the bytes of the header
        # phase here, before they pile up (one read is at most 256 KB).
        if self._awaiting == "headers":
            self._header_bytes += len(data)
        super().data_received(data)
        if self._awaiting == "headers" and self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            log.info("%s sent over %d bytes of request headers; closing", self._client_name(), MAX_HEADER_BYTES)
            self._answer_and_close(b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm("headers", self.request_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm("body", self.request_timeout + CLOSE_GRACE_S)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self, awaiting: str, seconds: float) -> None:
        self._disarm()
        self._awaiting = awaiting
        self._header_bytes = 0
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._awaiting = "nothing"

    def _expire(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        log.info("%s did not send its request %s within %g s (OCRHUB_REQUEST_TIMEOUT); closing", self._client_name(), self._awaiting, self.request_timeout)
        if self._awaiting == "headers":
            self._answer_and_close(b"408 Request Timeout")
        else:
            # The app has the request and answers it (BodyDeadline) unless it is stuck: no second answer.
            self.transport.close()

    def _answer_and_close(self, status: bytes) -> None:
        # Only between responses: a pipelined request's answer may be on its way.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()

    def _client_name(self) -> str:
        return "%s:%d" % self.client if self.client else "a client"


def protocol_with_deadlines(seconds: float) -> type[DeadlineHttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`), with `seconds` for headers and for the body."""
    return type("DeadlineHttpToolsProtocol", (DeadlineHttpToolsProtocol,), {"request_timeout": float(seconds)})


def uvicorn_config(app: ASGIApp, request_timeout: float, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration `ocrhub serve` runs with: deadlines on every request, no access log,
    and uvicorn's own lines logged through ocrhub's root handler (`setup_logging`)."""
    options.setdefault("access_log", False)
    # uvicorn's default config gives its loggers their own handlers, which bypass ocrhub's JSON
    # lines and secret redaction; with none, they propagate to the root logger.
    options.setdefault("log_config", None)
    options.setdefault("timeout_keep_alive", KEEP_ALIVE_S)
    return uvicorn.Config(app, http=protocol_with_deadlines(request_timeout), **options)
