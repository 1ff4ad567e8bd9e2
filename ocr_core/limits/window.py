"""A sliding-window limit shared by every worker: at most `limit` events per `window` seconds per key."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis

from ocr_core.limits import LimitExceeded

# Times come from Redis, not from each worker's clock, so workers on different hosts agree.
# Returns 0 when a slot was taken, else the microseconds until the oldest slot frees up.
ACQUIRE = """
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


class SlidingWindow:
    def __init__(
        self, conn: redis.Redis, prefix: str, limit: int, window: float = 1.0, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.prefix = prefix
        self.limit = limit
        self.window_us = int(window * 1_000_000)
        self.sleep = sleep
        self._acquire = conn.register_script(ACQUIRE)

    def acquire(self, key: str, timeout: float = 30.0) -> None:
        """Block until this process may take one slot for `key` (stored at `<prefix>:<key>`)."""
        deadline = time.monotonic() + timeout
        member = uuid.uuid4().hex
        while True:
            wait_us = int(self._acquire(keys=[f"{self.prefix}:{key}"], args=[self.window_us, self.limit, member]))
            if wait_us == 0:
                return
            wait = wait_us / 1_000_000
            if time.monotonic() + wait > deadline:
                raise LimitExceeded(f"more than {self.limit} per {self.window_us / 1e6:g} s queued for {key}", wait)
            self.sleep(wait)
