"""A stateful Notion API emulator on 127.0.0.1: a real HTTP server in a thread, with fault injection.

    with NotionEmulator() as notion:
        database_id, source_id = notion.workspace.add_database()
        notion.fail("pages.create", 500, commit=True)    # create the page, then lose the answer
        notion.fail("data_sources.query", 429, retry_after=1)
        notion.slow("pages.create", 2.0)                  # create, then answer after 2 s
        gate = notion.hold("pages.create")                # create, then answer only when released
        notion.chaos(0.2, seed=1)                         # random 429/500/529/slow answers

The real notion-client talks to it through its base URL. It checks the bearer token, the
Notion-Version header and the request shapes the sink relies on (see notion_workspace).
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.emulators.notion_shapes import NotionFailure
from tests.emulators.notion_workspace import Workspace

TOKEN = "ntn_emulated_0123456789abcdefghijklmnopqrstuv"
VERSION = "2025-09-03"
WRITES = {"pages.create", "blocks.children.append", "file_uploads.create", "file_uploads.send", "data_sources.update", "databases.create"}

ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(f"^/v1/{pattern}$"), op)
    for method, pattern, op in [
        ("GET", "users/me", "users.me"),
        ("POST", "databases", "databases.create"),
        ("GET", "databases/(?P<id>[^/]+)", "databases.retrieve"),
        ("GET", "data_sources/(?P<id>[^/]+)", "data_sources.retrieve"),
        ("PATCH", "data_sources/(?P<id>[^/]+)", "data_sources.update"),
        ("POST", "data_sources/(?P<id>[^/]+)/query", "data_sources.query"),
        ("POST", "pages", "pages.create"),
        ("GET", "pages/(?P<id>[^/]+)", "pages.retrieve"),
        ("PATCH", "blocks/(?P<id>[^/]+)/children", "blocks.children.append"),
        ("GET", "blocks/(?P<id>[^/]+)/children", "blocks.children.list"),
        ("POST", "file_uploads", "file_uploads.create"),
        ("POST", "file_uploads/(?P<id>[^/]+)/send", "file_uploads.send"),
        ("GET", "file_uploads/(?P<id>[^/]+)", "file_uploads.retrieve"),
    ]
]
CODES = {
    400: "validation_error", 401: "unauthorized", 404: "object_not_found", 409: "conflict_error", 429: "rate_limited",
    500: "internal_server_error", 502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout", 529: "service_overload",
}


class Gate:
    """Holds one answer: `reached` is set once the operation is done, the answer waits for `release()`.

    `body` is the held request's JSON body, to tell which delivery was caught.
    """

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.released = threading.Event()
        self.body: dict[str, Any] = {}

    def release(self) -> None:
        self.released.set()


@dataclass
class Fault:
    op: str
    status: int | None  # None: answer normally (late, with `delay`)
    times: int = 1
    retry_after: float | None = None
    commit: bool = False  # do the operation first: only the answer is lost
    delay: float = 0.0
    gate: Gate | None = None


@dataclass
class Call:
    op: str
    status: int
    started: float
    version: str = ""
    injected: bool = False


@dataclass
class Chaos:
    rate: float
    rng: random.Random
    statuses: tuple[int, ...]
    slow: float
    ops: frozenset[str] | None


@dataclass
class _Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class NotionEmulator:
    def __init__(self, token: str = TOKEN, *, max_upload_bytes: int = 5 * 1024 * 1024) -> None:
        self.workspace = Workspace(max_upload_bytes)
        self.tokens = {token}
        self.token = token
        self.faults: list[Fault] = []
        self.calls: list[Call] = []
        self._chaos: Chaos | None = None
        self._injected = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> NotionEmulator:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="notion-emulator", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> NotionEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sink_url(self, database_id: str, **options: object) -> str:
        """A notion:// URL for this emulator: fast budget, no settle pause, unless `options` say otherwise."""
        query = urlencode({"base_url": self.url, "rate": 200, "settle": 0, **options})
        return f"notion://{self.token}@{database_id.replace('-', '')}?{query}"

    # Fault injection.

    def fail(self, op: str, status: int, times: int = 1, *, retry_after: float | None = None, commit: bool = False, delay: float = 0.0) -> None:
        """The next `times` calls of `op` ("*" for any) answer `status`; with commit=True after doing the work."""
        with self._lock:
            self.faults.append(Fault(op, status, times, retry_after, commit, delay))

    def slow(self, op: str, delay: float, times: int = 1, *, commit: bool = True) -> None:
        """The next `times` calls of `op` answer after `delay` seconds (done first when commit=True)."""
        with self._lock:
            self.faults.append(Fault(op, None if commit else 504, times, None, commit, delay))

    def hold(self, op: str) -> Gate:
        """The next call of `op` is done, then its answer waits until the gate is released."""
        gate = Gate()
        with self._lock:
            self.faults.append(Fault(op, None, 1, None, True, 0.0, gate))
        return gate

    def chaos(self, rate: float, *, seed: int = 0, statuses: tuple[int, ...] = (429, 500, 529), slow: float = 0.0, ops: set[str] | None = None) -> None:
        """Each call fails with probability `rate`: a status from `statuses`, or (slow > 0) a late answer.

        A failed write is done first half of the time, as when Notion applies it but the answer is lost.
        """
        with self._lock:
            self._chaos = Chaos(rate, random.Random(seed), statuses, slow, frozenset(ops) if ops else None)

    def calm(self) -> None:
        with self._lock:
            self.faults.clear()
            self._chaos = None

    def count(self, op: str, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.op == op and (status is None or c.status == status))

    @property
    def injected(self) -> int:
        """Faults handed out so far (counted when taken: a slow answer may still be on its way)."""
        with self._lock:
            return self._injected

    def _take_fault(self, op: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.op in (op, "*") and fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    self._injected += 1
                    return fault
            chaos = self._chaos
            if chaos is None or (chaos.ops is not None and op not in chaos.ops) or chaos.rng.random() >= chaos.rate:
                return None
            self._injected += 1
            choices = list(chaos.statuses) + ([None] if chaos.slow else [])
            status = chaos.rng.choice(choices)
            commit = op in WRITES and status != 429 and chaos.rng.random() < 0.5
            if status is None:
                return Fault(op, None, commit=True, delay=chaos.slow) if commit or op not in WRITES else Fault(op, 504, delay=chaos.slow)
            return Fault(op, status, retry_after=0 if status in (429, 529) else None, commit=commit)

    # Serving one request.

    def answer(self, method: str, target: str, headers: Any, body: bytes) -> tuple[str, _Answer, bool]:
        parts = urlsplit(target)
        for route_method, pattern, op in ROUTES:
            found = pattern.match(parts.path)
            if found and route_method == method:
                break
        else:
            return "?", _error(400, "invalid_request_url", f"Invalid request URL: {method} {parts.path}"), False
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return op, _error(401, "unauthorized", "API token is invalid."), False
        version = headers.get("Notion-Version", "")
        if not version:
            return op, _error(400, "missing_version", "Notion-Version header failed validation: Notion-Version header should be defined."), False
        if version != VERSION:
            return op, _error(400, "validation_error", f"The emulator speaks Notion-Version {VERSION}, not {version}."), False
        fault = self._take_fault(op)
        if fault is not None and not fault.commit:
            self._stopping.wait(fault.delay)
            return op, _fault_answer(fault), True
        try:
            result = _Answer(200, self._perform(op, found.groupdict().get("id", ""), dict(parse_qsl(parts.query)), headers, body))
        except NotionFailure as exc:
            return op, _error(exc.status, exc.code, exc.message), False
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return op, _error(400, "validation_error", f"The request body does not match the schema: {exc!r}"), False
        if fault is None:
            return op, result, False
        if fault.gate is not None:
            fault.gate.body = json.loads(body) if body and op != "file_uploads.send" else {}
            fault.gate.reached.set()
            while not fault.gate.released.wait(0.05) and not self._stopping.is_set():
                pass
        self._stopping.wait(fault.delay)
        return op, (result if fault.status is None else _fault_answer(fault)), fault.status is not None or fault.delay > 0

    def _perform(self, op: str, object_id: str, query: dict[str, str], headers: Any, raw: bytes) -> dict[str, Any]:
        w = self.workspace
        if op == "file_uploads.send":
            return w.uploads_send(object_id, _multipart(headers.get("Content-Type", ""), raw))
        body = json.loads(raw) if raw else {}
        if not isinstance(body, dict):
            raise NotionFailure(400, "invalid_json", "Error parsing JSON body.")
        table = {
            "users.me": lambda: w.users_me(),
            "databases.create": lambda: w.databases_create(body),
            "databases.retrieve": lambda: w.databases_retrieve(object_id),
            "data_sources.retrieve": lambda: w.data_sources_retrieve(object_id),
            "data_sources.update": lambda: w.data_sources_update(object_id, body),
            "data_sources.query": lambda: w.data_sources_query(object_id, body),
            "pages.create": lambda: w.pages_create(body),
            "pages.retrieve": lambda: w.pages_retrieve(object_id),
            "blocks.children.append": lambda: w.blocks_append(object_id, body),
            "blocks.children.list": lambda: w.blocks_list(object_id, query),
            "file_uploads.create": lambda: w.uploads_create(body),
            "file_uploads.retrieve": lambda: w.uploads_retrieve(object_id),
        }
        return table[op]()

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> _Answer:
    body = {"object": "error", "status": status, "code": code, "message": message, "request_id": str(uuid.uuid4())}
    return _Answer(status, body, headers or {})


def _fault_answer(fault: Fault) -> _Answer:
    status = fault.status or 504
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    return _error(status, CODES.get(status, "internal_server_error"), f"Injected {status} by the emulator.", headers)


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str, str, bytes]]:
    if not content_type.startswith("multipart/form-data"):
        raise NotionFailure(400, "validation_error", "Send a file upload as multipart/form-data.")
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = (part.get_filename() or "", part.get_content_type(), part.get_payload(decode=True) or b"")
    return parts


def _handler(emulator: NotionEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in two writes; without this, Nagle and delayed ACKs add 40 ms to each answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            started = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            op, answer, injected = emulator.answer(self.command, self.path, self.headers, body)
            emulator.record(Call(op, answer.status, started, self.headers.get("Notion-Version", ""), injected))
            payload = json.dumps(answer.body).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up waiting (a timeout under test); the work, if any, is done.
                self.close_connection = True

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
