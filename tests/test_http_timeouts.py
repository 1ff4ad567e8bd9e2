"""Slow and endless clients against a real uvicorn run as `ocrhub serve` runs it, over raw sockets:
every connection that does not finish its request in OCRHUB_REQUEST_TIMEOUT is answered or closed soon after."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ocrhub.api import create_app
from ocrhub.http_timeouts import CLOSE_GRACE_S, MAX_HEADER_BYTES, BodyDeadline
from tests.api_server import Served, asgi_request, serve_api

TOKEN = "timeouts-test-token"
REQUEST_TIMEOUT = 1.0
# Closed within the timeout, the grace the app's 408 gets, and a margin for a loaded machine.
CLOSED_WITHIN = REQUEST_TIMEOUT + CLOSE_GRACE_S + 1.5


@pytest.fixture
def served(settings, set_env, conn) -> Iterator[Served]:
    api_settings = set_env(api_token=TOKEN, request_timeout=str(REQUEST_TIMEOUT), max_image_bytes="100000")
    with TestClient(create_app(api_settings, conn)) as client, serve_api(client.app, REQUEST_TIMEOUT) as server:
        yield server


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = bytearray()
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except socket.timeout:
        pytest.fail(f"still open after {limit:.1f} s; got {bytes(received)[:200]!r}")
    except ConnectionResetError:
        pass
    return bytes(received), time.monotonic() - started


def upload_head(length: int | None, *, chunked: bool = False) -> bytes:
    lines = [b"POST /api/images HTTP/1.1", b"Host: test", f"Authorization: Bearer {TOKEN}".encode(), b"Content-Type: application/octet-stream"]
    if length is not None:
        lines.append(f"Content-Length: {length}".encode())
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_a_connection_that_sends_nothing_is_closed(served):
    with served.connect() as sock:
        _, took = read_until_closed(sock, CLOSED_WITHIN)
    assert REQUEST_TIMEOUT * 0.8 <= took


def test_headers_sent_byte_by_byte_are_cut_off(served):
    request = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 1000
    started = time.monotonic()
    with served.connect() as sock:
        sock.settimeout(0.05)
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                if sock.recv(65536) == b"":
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                break
            assert time.monotonic() - started < CLOSED_WITHIN, "still open"
            time.sleep(0.05)
        else:
            pytest.fail("the server read the whole slow request")
    assert time.monotonic() - started >= REQUEST_TIMEOUT * 0.8


def test_a_body_shorter_than_its_content_length_gets_408_and_a_closed_connection(served):
    with served.connect() as sock:
        sock.sendall(upload_head(5000) + b"only a little")
        answer, took = read_until_closed(sock, CLOSED_WITHIN)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert took >= REQUEST_TIMEOUT * 0.8


def test_a_body_nobody_reads_still_closes_the_connection(served):
    # /healthz answers 405 to a POST without reading its body; the body never comes.
    with served.connect() as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
        answer, took = read_until_closed(sock, CLOSED_WITHIN)
    assert answer.startswith(b"HTTP/1.1 405")
    assert took >= REQUEST_TIMEOUT * 0.8


def test_endless_headers_are_refused_at_the_cap(served):
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        sent = 0
        try:
            while sent < 50 * MAX_HEADER_BYTES:
                sock.sendall(b"X-Filler: " + b"f" * 990 + b"\r\n")
                sent += 1002
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, _ = read_until_closed(sock, CLOSED_WITHIN)
    assert sent < 50 * MAX_HEADER_BYTES
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_an_oversized_content_length_is_refused_before_the_body(served):
    with served.connect() as sock:
        sock.sendall(upload_head(10**9))
        answer, took = read_until_closed(sock, CLOSED_WITHIN)
    assert answer.startswith(b"HTTP/1.1 413") and b"OCRHUB_MAX_IMAGE_BYTES" in answer
    assert took < REQUEST_TIMEOUT


def test_a_chunked_body_is_cut_at_the_limit(served):
    chunk = b"%x\r\n%s\r\n" % (10000, b"c" * 10000)
    with served.connect() as sock:
        sock.sendall(upload_head(None, chunked=True))
        sent = 0
        try:
            while sent < 100:
                sock.sendall(chunk)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, _ = read_until_closed(sock, CLOSED_WITHIN)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_slow_but_timely_client_is_served_and_keeps_its_connection(served):
    body = b"b" * 3000
    with served.connect() as sock:
        sock.sendall(upload_head(len(body)))
        for start in range(0, len(body), 1000):
            time.sleep(REQUEST_TIMEOUT / 5)
            sock.sendall(body[start : start + 1000])
        sock.settimeout(5)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 202"), first[:200]
        # The same connection takes the next request: no deadline left armed from the first.
        time.sleep(REQUEST_TIMEOUT * 0.6)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")


def test_body_deadline_answers_408_when_the_body_stops_coming():
    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read"})

    class Stalling:
        """A body that stops after one chunk: receive() never returns again."""

        async def __call__(self, scope, receive, send):  # noqa: ANN001, ANN204
            calls = 0

            async def stalling_receive() -> dict:
                nonlocal calls
                calls += 1
                if calls == 1:
                    return {"type": "http.request", "body": b"first", "more_body": True}
                await asyncio.sleep(3600)
                raise AssertionError("unreachable")

            await BodyDeadline(app, 0.2)(scope, stalling_receive, send)

    started = time.monotonic()
    answer = asgi_request(Stalling(), "POST", "/upload")
    assert answer.status == 408 and answer.headers["connection"] == "close"
    assert b"OCRHUB_REQUEST_TIMEOUT" in answer.body
    assert time.monotonic() - started < 2
