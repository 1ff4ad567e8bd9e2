"""Admin sessions, kept in Redis so any API process honours them: a random cookie, a CSRF token per
session, and a limit on sign-in attempts per client address."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

import redis

PREFIX = "ocrhub:admin"
COOKIE = "ocrhub_admin"
CSRF_HEADER = "x-csrf-token"
# Failed sign-ins one address may make per window, and across all addresses (a spread-out guesser).
ATTEMPTS_PER_ADDRESS = 5
ATTEMPTS_IN_ALL = 50
ATTEMPT_WINDOW_S = 15 * 60


@dataclass(frozen=True)
class Session:
    csrf: str
    started: float
    address: str


class Sessions:
    def __init__(self, conn: redis.Redis, lifetime_s: float) -> None:
        self.conn, self.lifetime_s = conn, int(lifetime_s)

    def start(self, address: str) -> tuple[str, Session]:
        """A new session: the cookie's value (kept only as a digest in Redis) and the session."""
        cookie = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), started=time.time(), address=address)
        self.conn.set(_key(cookie), json.dumps(session.__dict__), ex=self.lifetime_s)
        return cookie, session

    def find(self, cookie: str | None) -> Session | None:
        """The session of `cookie`, its lifetime renewed; None when signed out or expired."""
        if not cookie:
            return None
        key = _key(cookie)
        with self.conn.pipeline() as pipe:
            pipe.get(key)
            pipe.expire(key, self.lifetime_s)
            raw, _ = pipe.execute()
        return Session(**json.loads(raw)) if raw else None

    def end(self, cookie: str | None) -> None:
        if cookie:
            self.conn.delete(_key(cookie))

    def attempts_left(self, address: str) -> tuple[bool, int]:
        """Whether a sign-in from `address` may be tried now, and else the seconds to wait."""
        with self.conn.pipeline() as pipe:
            for key in (_attempts(address), _attempts("*")):
                pipe.get(key)
                pipe.ttl(key)
            mine, mine_ttl, everyone, everyone_ttl = pipe.execute()
        if int(mine or 0) >= ATTEMPTS_PER_ADDRESS:
            return False, max(int(mine_ttl), 1)
        if int(everyone or 0) >= ATTEMPTS_IN_ALL:
            return False, max(int(everyone_ttl), 1)
        return True, 0

    def failed(self, address: str) -> None:
        with self.conn.pipeline() as pipe:
            for key in (_attempts(address), _attempts("*")):
                pipe.set(key, 0, ex=ATTEMPT_WINDOW_S, nx=True)  # the window starts at the first failure
                pipe.incr(key)
            pipe.execute()

    def succeeded(self, address: str) -> None:
        self.conn.delete(_attempts(address))


def csrf_matches(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), (presented or "").encode())


def _key(cookie: str) -> str:
    return f"{PREFIX}:session:{hashlib.sha256(cookie.encode()).hexdigest()}"


def _attempts(address: str) -> str:
    return f"{PREFIX}:signin:{address}"
