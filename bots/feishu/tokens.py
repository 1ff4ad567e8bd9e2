"""The tenant_access_token, cached in Redis so every worker process shares one (Feishu limits how often it is issued)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import redis

PREFIX = "ocrhub:feishu:tenant-token"
# Refresh this long before Feishu's stated expiry, so no request goes out with a dying token.
EARLY = 300
# How long one process may hold the refresh lock; others wait at most about this long.
LOCK_TTL_MS = 10_000

# Forget a token only if it is still the one that was refused: another worker may already have replaced it.
FORGET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

Fetch = Callable[[], tuple[str, int]]  # -> (token, seconds until it expires)


class TenantTokens:
    def __init__(self, conn: redis.Redis, app_id: str, domain: str, fetch: Fetch, sleep: Callable[[float], None] = time.sleep) -> None:
        scope = hashlib.sha256(domain.encode()).hexdigest()[:12]
        self.key = f"{PREFIX}:{scope}:{app_id}"
        self.lock_key = f"{self.key}:refreshing"
        self.conn = conn
        self.fetch = fetch
        self.sleep = sleep
        self._forget = conn.register_script(FORGET)

    def get(self) -> str:
        cached = self.conn.get(self.key)
        if cached:
            return cached.decode()
        if self.conn.set(self.lock_key, "1", nx=True, px=LOCK_TTL_MS):
            try:
                return self._refresh()
            finally:
                self.conn.delete(self.lock_key)
        # Another process is fetching one: wait for it rather than asking Feishu twice.
        deadline = time.monotonic() + LOCK_TTL_MS / 1000
        while time.monotonic() < deadline:
            self.sleep(0.05)
            cached = self.conn.get(self.key)
            if cached:
                return cached.decode()
        return self._refresh()

    def forget(self, token: str) -> None:
        """Feishu refused `token`: the next `get` fetches a new one."""
        self._forget(keys=[self.key], args=[token])

    def _refresh(self) -> str:
        token, expires_in = self.fetch()
        self.conn.set(self.key, token, ex=max(30, expires_in - EARLY))
        return token
