"""An emulator of the Feishu open platform on 127.0.0.1: real HTTP (and WebSocket), started by tests.

Serves what ocrhub calls, as Feishu documents it:
  POST /open-apis/auth/v3/tenant_access_token/internal        tokens with an expiry (expire_tokens() ends them early)
  GET  /open-apis/im/v1/messages/{id}/resources/{key}?type=…   registered image or file bytes (type=image or
                                                               type=file, as the key is); 234xxx for anything else
  GET  /open-apis/im/v1/messages/{id}                         a message's type and content, as its event had them
  POST /open-apis/im/v1/messages/{id}/reply                    recorded; one message per uuid; 5/s per chat, then
                                                               HTTP 429, code 99991400 and x-ogw-ratelimit-reset
  PATCH /open-apis/im/v1/messages/{id}                        replaces a card the same app sent, when both the old
                                                               and the new card are shared (config.update_multi);
                                                               5/s per message; the reply keeps its history
  POST /callback/ws/endpoint + a WebSocket server              the long connection lark.ws.Client opens
Bad or expired tokens get code 99991663 (99991661 when missing).

Feishu's other side, events sent to the hub, is `events(app)` (feishu_events.py).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.emulators.feishu_events import Events, chat_id  # noqa: F401 - chat_id is part of the emulator's API

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"
WS_ENDPOINT_PATH = "/callback/ws/endpoint"
REPLY_BODY_LIMIT = 150 * 1024
CARD_BODY_LIMIT = 30 * 1024  # message cards: 30 KB a request
UUID_WINDOW = 3600.0
# Feishu hands out the current token again until it has less than this left.
TOKEN_REUSE_MIN = 1800


@dataclass(frozen=True)
class App:
    app_id: str
    app_secret: str = field(repr=False)
    encrypt_key: str = field(default="", repr=False)
    verification_token: str = field(default="", repr=False)
    # Granted scopes that change what the emulator serves: message.get of a group message needs this one.
    group_msg: bool = True


@dataclass(frozen=True)
class Reply:
    app_id: str
    parent_id: str
    message_id: str
    chat_id: str
    msg_type: str
    content: dict
    uuid: str
    in_thread: bool
    at: float
    body_bytes: int
    updates: tuple[dict, ...] = ()  # earlier contents, oldest first, when the card was updated

    @property
    def text(self) -> str:
        """A text reply's text; a card's whole text (its `ocr_text` element), or else every plain
        text of the card, its title first, a line each."""
        if self.msg_type == "interactive":
            found = _element(self.content, "ocr_text")
            return str(found["text"]["content"]) if found else "\n".join(_plain_texts(self.content))
        return str(self.content.get("text", ""))

    @property
    def persons(self) -> list[str]:
        """The users a card shows by name (person elements)."""
        return [node["user_id"] for node in _nodes(self.content) if node.get("tag") == "person"]

    @property
    def links(self) -> list[str]:
        """The URLs a card's buttons open."""
        return [b["default_url"] for b in _behaviors(self.content) if b.get("type") == "open_url"] if self.msg_type == "interactive" else []


def _nodes(node: Any) -> list[dict]:
    """Every object in a card, depth first, in document order."""
    if isinstance(node, dict):
        return [node] + [n for child in node.values() for n in _nodes(child)]
    if isinstance(node, list):
        return [n for child in node for n in _nodes(child)]
    return []


def _plain_texts(card: dict) -> list[str]:
    return [str(n.get("content", "")) for n in _nodes(card) if n.get("tag") == "plain_text"]


def _behaviors(node: Any) -> list[dict]:
    if isinstance(node, dict):
        found = [b for b in node.get("behaviors", []) if isinstance(b, dict)]
        return found + [b for child in node.values() for b in _behaviors(child)]
    if isinstance(node, list):
        return [b for child in node for b in _behaviors(child)]
    return []


def _element(node: Any, element_id: str) -> dict | None:
    if isinstance(node, dict):
        if node.get("element_id") == element_id:
            return node
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _element(child, element_id)
        if found is not None:
            return found
    return None


@dataclass
class _Message:
    message_id: str
    chat_id: str
    images: dict[str, bytes]  # every resource by key, images and files alike
    files: frozenset[str] = frozenset()  # the keys that are files (served with type=file only)
    msg_type: str = ""  # as sent in its event, for GET /im/v1/messages/{id}
    content: str = ""
    sender: str = ""
    create_time: str = ""


@dataclass
class _Token:
    app_id: str
    expires_at: float
    revoked: bool = False


class FeishuEmulator:
    def __init__(self, *, token_ttl: int = 7200, chat_rate: int = 5, rate_window: float = 1.0, reset_after: int = 1) -> None:
        self.token_ttl = token_ttl
        self.chat_rate = chat_rate
        self.rate_window = rate_window
        self.reset_after = reset_after
        self.lock = threading.Lock()
        self.apps: dict[str, App] = {}
        self.messages: dict[str, _Message] = {}
        self.tokens: dict[str, _Token] = {}
        self.failures: dict[tuple[str, str], tuple[int, str, int]] = {}
        self.throttles: dict[str, int] = defaultdict(int)
        self.sent_at: dict[str, deque[float]] = defaultdict(deque)
        self.updated_at: dict[str, deque[float]] = defaultdict(deque)
        self.by_uuid: dict[tuple[str, str], tuple[float, dict]] = {}
        self.replies: list[Reply] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.ws_clients: dict[str, Any] = {}
        self.ws_answers: dict[str, dict] = {}
        self.ws_answered = threading.Condition(self.lock)
        self._http: ThreadingHTTPServer | None = None
        self._ws: Any = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FeishuEmulator:
        from websockets.sync.server import serve

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._ws = serve(self._ws_session, "127.0.0.1", 0)
        for target in (self._http.serve_forever, self._ws.serve_forever):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._ws is not None:
            self._ws.shutdown()

    def __enter__(self) -> FeishuEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        assert self._http is not None
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def hub_settings(self, app: App) -> dict[str, str]:
        """The OCRHUB_FEISHU_* settings that make `app` the hub's default bot, talking to this emulator."""
        return {
            "OCRHUB_FEISHU_APP_ID": app.app_id,
            "OCRHUB_FEISHU_APP_SECRET": app.app_secret,
            "OCRHUB_FEISHU_ENCRYPT_KEY": app.encrypt_key,
            "OCRHUB_FEISHU_VERIFICATION_TOKEN": app.verification_token,
            "OCRHUB_FEISHU_DOMAIN": self.origin,
        }

    @property
    def ws_port(self) -> int:
        return self._ws.socket.getsockname()[1]

    # -- what tests set up and look at -----------------------------------------------------------

    def add_app(self, app_id: str = "", app_secret: str = "", encrypt_key: str = "", verification_token: str = "", group_msg: bool = True) -> App:
        app = App(app_id or f"cli_{secrets.token_hex(8)}", app_secret or secrets.token_urlsafe(24), encrypt_key, verification_token, group_msg)
        with self.lock:
            self.apps[app.app_id] = app
        return app

    def grant_group_msg(self, app_id: str, granted: bool) -> None:
        """Grant or withdraw the app's im:message.group_msg scope."""
        with self.lock:
            self.apps[app_id] = replace(self.apps[app_id], group_msg=granted)

    def add_message(self, chat_id: str, images: dict[str, bytes], message_id: str = "", files: dict[str, bytes] | None = None) -> str:
        message_id = message_id or f"om_{uuid.uuid4().hex}"
        with self.lock:
            self.messages[message_id] = _Message(message_id, chat_id, {**images, **(files or {})}, frozenset(files or ()))
        return message_id

    def describe_message(self, message_id: str, msg_type: str, content: str, sender: str, create_time: str) -> None:
        """What GET /im/v1/messages/{id} says of a message: its type and content, as its event had them."""
        with self.lock:
            message = self.messages[message_id]
            message.msg_type, message.content, message.sender, message.create_time = msg_type, content, sender, create_time

    def expire_tokens(self, app_id: str | None = None) -> None:
        """End every current token early; the next token request gets a new one."""
        with self.lock:
            for token in self.tokens.values():
                if app_id is None or token.app_id == app_id:
                    token.revoked = True

    def throttle(self, kind: str, times: int = 1) -> None:
        """Refuse the next `times` calls of `kind` ("reply" or "resource") as rate-limited."""
        with self.lock:
            self.throttles[kind] += times

    def fail_resource(self, message_id: str, image_key: str, code: int, msg: str, status: int = 400) -> None:
        """Answer this download with a business error; `status` 200 is how Feishu reports some of them."""
        with self.lock:
            self.failures[(message_id, image_key)] = (code, msg, status)

    def count(self, what: str) -> int:
        with self.lock:
            return self.counts[what]

    def replies_to(self, parent_id: str) -> list[Reply]:
        with self.lock:
            return [r for r in self.replies if r.parent_id == parent_id]

    def all_replies(self) -> list[Reply]:
        with self.lock:
            return list(self.replies)

    def wait_for_replies(self, count: int, timeout: float = 60.0) -> list[Reply]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = self.all_replies()
            if len(replies) >= count:
                return replies
            time.sleep(0.05)
        raise AssertionError(f"expected {count} replies within {timeout:.0f} s, got {self.all_replies()}")

    def events(self, app: App) -> Events:
        return Events(self, app)

    # -- the long connection ---------------------------------------------------------------------

    def push(self, app_id: str, payload: dict, timeout: float = 10.0) -> int:
        """Send one event down the app's long connection; returns the HTTP-like code the client answered."""
        from lark_oapi.ws.pb.pbbp2_pb2 import Frame

        deadline = time.monotonic() + timeout
        with self.lock:
            while app_id not in self.ws_clients:
                if not self.ws_answered.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"no long connection from app {app_id} within {timeout:.0f} s")
            connection = self.ws_clients[app_id]
        frame = Frame()
        frame.SeqID, frame.LogID, frame.service, frame.method = 0, 0, 1, 1
        frame_id = uuid.uuid4().hex
        for key, value in (("type", "event"), ("message_id", frame_id), ("trace_id", uuid.uuid4().hex), ("sum", "1"), ("seq", "0")):
            header = frame.headers.add()
            header.key, header.value = key, value
        frame.payload = json.dumps(payload, ensure_ascii=False).encode()
        connection.send(frame.SerializeToString())
        with self.lock:
            while frame_id not in self.ws_answers:
                if not self.ws_answered.wait(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"the long-connection client did not answer event frame {frame_id}")
            return int(self.ws_answers.pop(frame_id).get("code", 0))

    def _ws_session(self, connection: Any) -> None:
        from lark_oapi.ws.pb.pbbp2_pb2 import Frame
        from websockets.exceptions import ConnectionClosed

        query = parse_qs(urlsplit(connection.request.path).query)
        app_id = query.get("app", [""])[0]
        with self.lock:
            self.ws_clients[app_id] = connection
            self.ws_answered.notify_all()
        try:
            for raw in connection:
                frame = Frame()
                frame.ParseFromString(raw)
                headers = {h.key: h.value for h in frame.headers}
                if frame.method == 0 and headers.get("type") == "ping":
                    pong = Frame()
                    pong.SeqID, pong.LogID, pong.service, pong.method = 0, 0, frame.service, 0
                    header = pong.headers.add()
                    header.key, header.value = "type", "pong"
                    connection.send(pong.SerializeToString())
                elif frame.method == 1:
                    with self.lock:
                        self.ws_answers[headers.get("message_id", "")] = json.loads(frame.payload or b"{}")
                        self.ws_answered.notify_all()
        except ConnectionClosed:
            pass  # the client went away, as a stopped `ocrhub feishu-connect` does
        finally:
            with self.lock:
                if self.ws_clients.get(app_id) is connection:
                    del self.ws_clients[app_id]

    # -- the API, called from the HTTP handler ---------------------------------------------------

    def _issue_token(self, body: dict) -> tuple[int, dict, dict]:
        app = self.apps.get(str(body.get("app_id", "")))
        if app is None or body.get("app_secret") != app.app_secret:
            return 400, {"code": 10014, "msg": "app secret invalid"}, {}
        self.counts["token"] += 1
        now = time.time()
        for value, token in self.tokens.items():
            if token.app_id == app.app_id and not token.revoked and token.expires_at - now > TOKEN_REUSE_MIN:
                return 200, {"code": 0, "msg": "ok", "tenant_access_token": value, "expire": int(token.expires_at - now)}, {}
        value = f"t-{secrets.token_hex(16)}"
        self.tokens[value] = _Token(app.app_id, now + self.token_ttl)
        return 200, {"code": 0, "msg": "ok", "tenant_access_token": value, "expire": self.token_ttl}, {}

    def _authorise(self, header: str | None) -> tuple[App | None, tuple[int, dict, dict] | None]:
        if not header or not header.startswith("Bearer ") or not header[7:].strip():
            return None, (400, {"code": 99991661, "msg": "Missing access token for authorization. Please make a request with token attached."}, {})
        token = self.tokens.get(header[7:].strip())
        if token is None or token.revoked or token.expires_at <= time.time():
            self.counts["invalid_token"] += 1
            return None, (400, {"code": 99991663, "msg": "Invalid access token for authorization. Please make a request with token attached."}, {})
        return self.apps[token.app_id], None

    def _rate_limited(self, kind: str, chat_id: str | None) -> tuple[int, dict, dict] | None:
        limited = False
        if self.throttles[kind] > 0:
            self.throttles[kind] -= 1
            limited = True
        elif chat_id is not None:
            now = time.monotonic()
            window = self.sent_at[chat_id]
            while window and now - window[0] >= self.rate_window:
                window.popleft()
            if len(window) >= self.chat_rate:
                limited = True
            else:
                window.append(now)
        if not limited:
            return None
        self.counts[f"rate_limited_{kind}"] += 1
        headers = {"x-ogw-ratelimit-limit": str(self.chat_rate), "x-ogw-ratelimit-reset": str(self.reset_after)}
        return 429, {"code": 99991400, "msg": "request trigger frequency limit"}, headers

    def _resource(self, message_id: str, key: str, query: dict[str, list[str]]) -> tuple[int, dict | bytes, dict]:
        self.counts["resource"] += 1
        limited = self._rate_limited("resource", None)
        if limited:
            return limited
        if query.get("type", [""])[0] not in ("image", "file", "media"):
            return 400, {"code": 234001, "msg": "Invalid request param."}, {}
        if (message_id, key) in self.failures:
            code, msg, status = self.failures[(message_id, key)]
            return status, {"code": code, "msg": msg}, {}
        message = self.messages.get(message_id)
        if message is None or key not in message.images:
            return 400, {"code": 234003, "msg": "File not in msg."}, {}
        if (key in message.files) != (query["type"][0] == "file"):
            # Feishu serves a file's key with type=file only, and an image's with type=image.
            return 400, {"code": 234001, "msg": "Invalid request param."}, {}
        data = message.images[key]
        kind = (
            "image/png" if data.startswith(b"\x89PNG") else "image/jpeg" if data.startswith(b"\xff\xd8")
            else "application/pdf" if data.startswith(b"%PDF") else "application/octet-stream"
        )  # fmt: skip
        return 200, data, {"Content-Type": kind, "Content-Disposition": f'attachment; filename="{key}"'}

    def _message(self, app: App, message_id: str) -> tuple[int, dict, dict]:
        self.counts["message"] += 1
        if not app.group_msg:
            # As an app, reading a group's message needs "Read all messages in groups" besides im:message.
            return 400, {"code": 99991672, "msg": "Access denied. One of the following scopes is required: [im:message.group_msg]."}, {}
        message = self.messages.get(message_id)
        if message is None or not message.msg_type:
            return 400, {"code": 230001, "msg": f"Your request contains an invalid request parameter, ext=invalid message_id: {message_id}"}, {}
        item = {
            "message_id": message.message_id, "root_id": "", "parent_id": "", "thread_id": "", "msg_type": message.msg_type,
            "create_time": message.create_time, "update_time": message.create_time, "deleted": False, "updated": False,
            "chat_id": message.chat_id, "sender": {"id": message.sender, "id_type": "open_id", "sender_type": "user", "tenant_key": "tenant-emulated"},
            "body": {"content": message.content}, "mentions": [], "upper_message_id": "",
        }  # fmt: skip
        return 200, {"code": 0, "msg": "success", "data": {"items": [item]}}, {}

    def _reply(self, app: App, parent_id: str, raw: bytes) -> tuple[int, dict, dict]:
        self.counts["reply"] += 1
        message = self.messages.get(parent_id)
        if message is None:
            return 400, {"code": 230001, "msg": f"Your request contains an invalid request parameter, ext=invalid message_id: {parent_id}"}, {}
        limited = self._rate_limited("reply", message.chat_id)
        if limited:
            return limited
        try:
            body = json.loads(raw)
            content = json.loads(body["content"])
            msg_type = body["msg_type"]
        except (ValueError, KeyError, TypeError):
            return 400, {"code": 230001, "msg": "Your request contains an invalid request parameter, ext=content"}, {}
        reply_uuid = str(body.get("uuid") or "")
        if len(reply_uuid) > 50:
            return 400, {"code": 230001, "msg": "Your request contains an invalid request parameter, ext=uuid longer than 50"}, {}
        if len(raw) > (CARD_BODY_LIMIT if msg_type == "interactive" else REPLY_BODY_LIMIT):
            return 400, {"code": 230025, "msg": "The length of the message content reaches its limit."}, {}
        if msg_type == "interactive" and not _valid_card(content):
            return 400, {"code": 230099, "msg": "Failed to create card content, ext=ErrCode: 200621; ErrMsg: parse card json err"}, {}
        now = time.time()
        if reply_uuid:
            seen = self.by_uuid.get((app.app_id, reply_uuid))
            if seen is not None and now - seen[0] < UUID_WINDOW:
                self.counts["reply_deduplicated"] += 1
                return 200, {"code": 0, "msg": "success", "data": seen[1]}, {}
        reply = Reply(
            app_id=app.app_id,
            parent_id=parent_id,
            message_id=f"om_{uuid.uuid4().hex}",
            chat_id=message.chat_id,
            msg_type=msg_type,
            content=content,
            uuid=reply_uuid,
            in_thread=bool(body.get("reply_in_thread")),
            at=now,
            body_bytes=len(raw),
        )
        self.replies.append(reply)
        self.messages[reply.message_id] = _Message(reply.message_id, message.chat_id, {})
        data = {
            "message_id": reply.message_id,
            "root_id": parent_id,
            "parent_id": parent_id,
            "msg_type": msg_type,
            "create_time": str(int(now * 1000)),
            "chat_id": message.chat_id,
            "sender": {"id": app.app_id, "id_type": "app_id", "sender_type": "app"},
            "body": {"content": body["content"]},
        }
        if reply_uuid:
            self.by_uuid[(app.app_id, reply_uuid)] = (now, data)
        return 200, {"code": 0, "msg": "success", "data": data}, {}

    def _update_card(self, app: App, message_id: str, raw: bytes) -> tuple[int, dict, dict]:
        self.counts["update"] += 1
        index = next((i for i, r in enumerate(self.replies) if r.message_id == message_id), None)
        if index is None or self.replies[index].app_id != app.app_id:
            return 400, {"code": 230001, "msg": f"Your request contains an invalid request parameter, ext=invalid message_id: {message_id}"}, {}
        reply = self.replies[index]
        if reply.msg_type != "interactive":
            return 400, {"code": 230001, "msg": "Your request contains an invalid request parameter, ext=only cards can be updated"}, {}
        window = self.updated_at[message_id]
        now = time.monotonic()
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= 5:
            self.counts["rate_limited_update"] += 1
            return 429, {"code": 230020, "msg": "This operation triggers the frequency limit."}, {"x-ogw-ratelimit-reset": str(self.reset_after)}
        window.append(now)
        try:
            content = json.loads(json.loads(raw)["content"])
        except (ValueError, KeyError, TypeError):
            return 400, {"code": 230001, "msg": "Your request contains an invalid request parameter, ext=content"}, {}
        if len(raw) > CARD_BODY_LIMIT:
            return 400, {"code": 230025, "msg": "The length of the message content reaches its limit."}, {}
        if not _valid_card(content):
            return 400, {"code": 230099, "msg": "Failed to create card content, ext=ErrCode: 200621; ErrMsg: parse card json err"}, {}
        if not (_shared(reply.content) and _shared(content)):
            return 400, {"code": 230099, "msg": "Failed to update card content: update_multi must be true before and after the update"}, {}
        self.replies[index] = replace(reply, content=content, updates=(*reply.updates, reply.content))
        return 200, {"code": 0, "msg": "success", "data": {}}, {}

    def _ws_endpoint(self, body: dict) -> tuple[int, dict, dict]:
        app = self.apps.get(str(body.get("AppID", "")))
        if app is None or body.get("AppSecret") != app.app_secret:
            return 200, {"code": 1000040344, "msg": "invalid app credentials"}, {}
        url = f"ws://127.0.0.1:{self.ws_port}/ws?device_id={uuid.uuid4().hex}&service_id=1&app={app.app_id}&ticket={secrets.token_hex(8)}"
        config = {"ReconnectCount": -1, "ReconnectInterval": 1, "ReconnectNonce": 0, "PingInterval": 30}
        return 200, {"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": config}}, {}

    def handle(self, method: str, path: str, headers: Any, raw: bytes) -> tuple[int, dict | bytes, dict]:
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        segments = parts.path.strip("/").split("/")
        with self.lock:
            if method == "POST" and parts.path == TOKEN_PATH:
                return self._issue_token(_json(raw))
            if method == "POST" and parts.path == WS_ENDPOINT_PATH:
                return self._ws_endpoint(_json(raw))
            if segments[:4] == ["open-apis", "im", "v1", "messages"] and len(segments) >= 5:
                app, refused = self._authorise(headers.get("Authorization"))
                if refused:
                    return refused
                assert app is not None
                if method == "GET" and len(segments) == 7 and segments[5] == "resources":
                    return self._resource(segments[4], segments[6], query)
                if method == "POST" and len(segments) == 6 and segments[5] == "reply":
                    return self._reply(app, segments[4], raw)
                if method == "GET" and len(segments) == 5:
                    return self._message(app, segments[4])
                if method == "PATCH" and len(segments) == 5:
                    return self._update_card(app, segments[4], raw)
        return 404, {"code": 404, "msg": f"the emulator does not serve {method} {parts.path}"}, {}


def _valid_card(card: Any) -> bool:
    """Card JSON 2.0 as Feishu checks it: a header title, a body of elements, each with a tag."""
    if not isinstance(card, dict) or card.get("schema") != "2.0":
        return False
    elements = card.get("body", {}).get("elements") if isinstance(card.get("body"), dict) else None
    title = card.get("header", {}).get("title", {}) if isinstance(card.get("header"), dict) else {}
    return isinstance(elements, list) and bool(elements) and all(isinstance(e, dict) and e.get("tag") for e in elements) and isinstance(title, dict)


def _shared(card: Any) -> bool:
    return isinstance(card, dict) and isinstance(card.get("config"), dict) and card["config"].get("update_multi") is True


def _json(raw: bytes) -> dict:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _handler(emulator: FeishuEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, body, extra = emulator.handle(method, self.path, self.headers, raw)
            data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            if not isinstance(body, bytes):
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("X-Tt-Logid", secrets.token_hex(10))
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_PATCH(self) -> None:  # noqa: N802
            self._serve("PATCH")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler
