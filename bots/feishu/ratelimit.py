"""A sliding-window limit shared by every worker: Feishu allows a bot 5 messages per second in one chat."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis

PREFIX = "ocrhub:feishu:rate"

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


class RateLimitTimeout(Exception):
    """No slot came free within the allowed wait."""


class ChatRateLimiter:
    def __init__(self, conn: redis.Redis, limit: int = 5, window: float = 1.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit = limit
        self.window_us = int(window * 1_000_000)
        self.sleep = sleep
        self._acquire = conn.register_script(ACQUIRE)

    def acquire(self, scope: str, timeout: float = 30.0) -> None:
        """Block until this process may send one message to `scope` (a bot's chat)."""
        deadline = time.monotonic() + timeout
        member = uuid.uuid4().hex
        while True:
            wait_us = int(self._acquire(keys=[f"{PREFIX}:{scope}"], args=[self.window_us, self.limit, member]))
            if wait_us == 0:
                return
            wait = wait_us / 1_000_000
            if time.monotonic() + wait > deadline:
                raise RateLimitTimeout(f"more than {self.limit} messages per {self.window_us / 1e6:g} s queued for {scope}")
            self.sleep(wait)
