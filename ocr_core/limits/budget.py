"""A request budget per scope (for Notion: per integration token), shared by every worker process through Redis.

A service allows so many requests per second per scope and answers 429 beyond that. A generic
cell rate algorithm keeps one "theoretical arrival time" per scope in Redis; each request
reserves the next free slot and sleeps until it. A Retry-After pushes that time out for
everybody, so one worker's 429 slows all of them instead of each finding out on its own.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Protocol

import redis

from ocr_core.limits import LimitExceeded

# KEYS[1]: the scope's arrival-time key. ARGV: interval_us, burst, max_wait_us.
# Returns the microseconds to sleep before sending, or -1 - wait when the wait exceeds max_wait.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local next_tat = math.max(tat, now) + interval
local wait = math.max(0, next_tat - now - tonumber(ARGV[2]) * interval)
if wait > tonumber(ARGV[3]) then
    return -1 - wait
end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return wait
"""

# KEYS[1]: the scope's arrival-time key. ARGV: pause_us (already including the burst allowance).
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local paused = now + tonumber(ARGV[1])
if paused > tat then
    redis.call('SET', KEYS[1], string.format('%d', paused), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 0
"""


class Budget(Protocol):
    def acquire(self) -> None:
        """Block until a request may be sent; LimitExceeded when that would take longer than allowed."""

    def pause(self, seconds: float) -> None:
        """Nobody sends for `seconds` (the service's Retry-After)."""


def budget_key(prefix: str, scope: str) -> str:
    # A hash, never the scope itself: a scope may be a secret (an API token), and Redis keys show up in monitoring tools.
    return f"{prefix}:{hashlib.sha256(scope.encode()).hexdigest()[:16]}"


class RedisBudget:
    def __init__(
        self, conn: redis.Redis, prefix: str, scope: str, per_second: float, *, burst: int = 1, max_wait: float = 120.0
    ) -> None:
        self.conn = conn
        self.key = budget_key(prefix, scope)
        self.interval_us = int(1_000_000 / per_second)
        self.burst = burst
        self.max_wait_us = int(max_wait * 1_000_000)
        self._reserve = conn.register_script(_RESERVE)
        self._pause = conn.register_script(_PAUSE)

    def acquire(self) -> None:
        wait_us = int(self._reserve(keys=[self.key], args=[self.interval_us, self.burst, self.max_wait_us]))
        if wait_us < 0:
            wait = (-wait_us - 1) / 1e6
            raise LimitExceeded(f"the request budget for this scope is booked {wait:.0f} s ahead", wait)
        if wait_us:
            time.sleep(wait_us / 1_000_000)

    def pause(self, seconds: float) -> None:
        # Keep the burst allowance from shortening the pause: the next request waits the full time.
        pause_us = int(seconds * 1_000_000) + (self.burst - 1) * self.interval_us
        self._pause(keys=[self.key], args=[pause_us])


class LocalBudget:
    """The same algorithm inside one process, for commands that run without a hub (e.g. `ocrhub notion init`); it never refuses."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)
