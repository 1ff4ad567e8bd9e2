"""Who may call the HTTP API: the bearer-token gate in front of every route that is not open by design.

Closed by default: a path is reachable without the token only when it is in the open list the app
gives (platform webhooks, which verify their own signatures; health and readiness probes; /metrics
while OCRHUB_METRICS_PUBLIC). Everything else, /api/*, the docs, /openapi.json and any route added
later, answers 401 without the token. The open paths are exact templates that no other route
shares, so the decision is made from the path alone, before routing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from typing import Any

# The router's own reading of a request's path (root_path removed): the gate and the router agree.
from starlette._utils import get_route_path
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

SCHEME_NAME = "apiToken"
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "The API token: OCRHUB_API_TOKEN, or the one `ocrhub up` generates into <data folder>/api-token.",
}
# Nothing about why: not whether a token is configured, nor how close a guess was.
REFUSAL_BODY = json.dumps({"detail": "unauthorized"}).encode()


def open_path_matcher(paths: Iterable[str]) -> Callable[[Scope], bool]:
    """Whether a request's path is one of `paths`, route templates such as "/feishu/{bot_id}/events"
    included (any method: a wrong one gets the route's own 405, not a 401)."""
    patterns = [compile_path(path)[0] for path in sorted(set(paths))]

    def is_open(scope: Scope) -> bool:
        path = get_route_path(scope)
        return any(pattern.match(path) for pattern in patterns)

    return is_open


def token_matches(authorization: bytes | None, expected_digest: bytes | None) -> bool:
    """`Authorization: Bearer <token>` against the expected token's SHA-256. Digests of equal length are
    compared in constant time, so neither the token's content nor its length leaks through timing."""
    if expected_digest is None or authorization is None:
        return False
    scheme, _, credentials = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(hashlib.sha256(credentials.strip()).digest(), expected_digest)


class BearerGate:
    """ASGI middleware: HTTP requests outside `is_open` need `Authorization: Bearer <token>`.

    With an empty token nothing outside `is_open` is reachable: an API without a configured token is
    closed, never open."""

    def __init__(self, app: ASGIApp, token: str, is_open: Callable[[Scope], bool]) -> None:
        self.app = app
        self.is_open = is_open
        self._digest = hashlib.sha256(token.encode()).digest() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.is_open(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await send({
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", b"Bearer"),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(REFUSAL_BODY)).encode()),
                    # The body of a refused upload is never read: close rather than drain it.
                    (b"connection", b"close"),
                ],
            })
            await send({"type": "http.response.body", "body": REFUSAL_BODY})

    def _authorized(self, scope: Scope) -> bool:
        authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        return token_matches(authorization, self._digest)


def declare_bearer_security(schema: dict[str, Any], is_open: Callable[[Scope], bool]) -> dict[str, Any]:
    """Mark in an OpenAPI schema which operations need the token, by the gate's own rule, so that
    clients (and schemathesis) know to send it."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME_NAME] = SECURITY_SCHEME
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            probe = {"type": "http", "path": path, "root_path": "", "method": method.upper(), "headers": []}
            operation["security"] = [] if is_open(probe) else [{SCHEME_NAME: []}]
    return schema
