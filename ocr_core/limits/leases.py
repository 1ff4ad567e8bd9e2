"""vLLM permits: leases in Redis shared by every worker thread on every machine.

A request to a vLLM server first takes a *ticket* in one waiting room, then a *lease* on a server.
Both carry an expiry that their holder renews, so a holder killed with SIGKILL gives its permit back
within `lease_ttl` seconds; counts are derived from the leases themselves, never kept as counters, so
they cannot drift or go negative.

Who goes next is weighted fair queuing: a ticket's place is its chat's virtual finish time (the
chat's previous finish, or the room's clock, plus the request's cost), so small images go before
large ones and a chat that posts 200 images takes its turn with the others instead of before them.

A server admits a lease while its lease count stays within its `limit` (requests) and, when its KV
capacity is known, the leases' summed cost (estimated KV tokens) within `kv_tokens`. A lone request
always fits an empty server, however large.
"""

from __future__ import annotations

import atexit
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

PREFIX = "ocrhub:vllm"
CHANNEL = f"{PREFIX}:released"

# A ticket that cannot fit anywhere may be passed by smaller ones behind it for this long; after
# that nobody behind it is admitted until it is, so a large scan is never starved.
BYPASS_MS = 3000

# KEYS: none (server keys are derived from ARGV, all under PREFIX).
# ARGV: prefix, ticket, cost, fair_key, ticket_ttl_ms, lease_ttl_ms, server ids…
# Returns {1, server} when this ticket was granted a lease, {0, why} when it waits,
# {2, why} when no server can take anything now (every one open or at limit 0).
_ACQUIRE = """
local p = ARGV[1]
local me = ARGV[2]
local my_cost = tonumber(ARGV[3])
local fair = ARGV[4]
local ticket_ttl = tonumber(ARGV[5])
local lease_ttl = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local waiting, tickets, expiry = p .. ':waiting', p .. ':tickets', p .. ':ticket-expiry'
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
  redis.call('ZREM', waiting, gone)
  redis.call('HDEL', tickets, gone)
  redis.call('ZREM', expiry, gone)
end

local clock = tonumber(redis.call('GET', p .. ':clock') or '0')
if redis.call('HEXISTS', tickets, me) == 0 then
  local start = math.max(clock, tonumber(redis.call('HGET', p .. ':finish', fair) or '0'))
  local finish = start + my_cost
  redis.call('HSET', p .. ':finish', fair, finish)
  redis.call('ZADD', waiting, finish, me)
  redis.call('HSET', tickets, me, my_cost .. ' ' .. start .. ' ' .. now)
end
redis.call('ZADD', expiry, now + ticket_ttl, me)

local servers = {}
local any_open = false
for i = 7, #ARGV do
  local id = ARGV[i]
  local key = p .. ':server:' .. id
  local leases, costs = key .. ':leases', key .. ':costs'
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
    redis.call('ZREM', leases, gone)
    redis.call('HDEL', costs, gone)
  end
  local used = 0
  for _, c in ipairs(redis.call('HVALS', costs)) do used = used + tonumber(c) end
  local state = redis.call('HMGET', key, 'limit', 'kv_tokens', 'state', 'open_until')
  local limit = math.floor(tonumber(state[1] or '0'))
  local circuit = state[3] or 'closed'
  if circuit == 'open' then
    if now < tonumber(state[4] or '0') then limit = 0 else limit = 1 end  -- half-open: one trial
  end
  if limit > 0 then any_open = true end
  servers[#servers + 1] = {id = id, key = key, limit = limit, kv = tonumber(state[2] or '0'),
                           count = redis.call('ZCARD', leases), used = used}
end
if not any_open then return {2, 'no server is taking requests'} end

local function best_fit(cost)
  local best, best_free = nil, -1
  for _, s in ipairs(servers) do
    if s.count < s.limit and (s.kv <= 0 or s.count == 0 or s.used + cost <= s.kv) then
      local free = (s.limit - s.count) / s.limit
      if free > best_free then best, best_free = s, free end
    end
  end
  return best
end

local why = 'waiting for a permit'
local order = redis.call('ZRANGE', waiting, 0, 255)
for _, ticket in ipairs(order) do
  local raw = redis.call('HGET', tickets, ticket)
  if raw then
    local cost, start, since = string.match(raw, '(%S+) (%S+) (%S+)')
    cost = tonumber(cost)
    local s = best_fit(cost)
    if s then
      if ticket == me then
        redis.call('ZADD', s.key .. ':leases', now + lease_ttl, me)
        redis.call('HSET', s.key .. ':costs', me, cost)
        redis.call('ZREM', waiting, me)
        redis.call('HDEL', tickets, me)
        redis.call('ZREM', expiry, me)
        if tonumber(start) > clock then redis.call('SET', p .. ':clock', start) end
        return {1, s.id}
      end
      s.count = s.count + 1
      s.used = s.used + cost
    elseif ticket == me then
      why = 'too large for the room left'
    elseif now - tonumber(since) > %(bypass)d then
      return {0, 'behind a large request'}
    end
    if ticket == me then return {0, why} end
  end
end
return {0, why}
""".replace("%(bypass)d", str(BYPASS_MS))

# ARGV: prefix, server, lease, outcome (ok | fail | reject | none), failures_to_open, base_cooldown_ms
_RELEASE = """
local key = ARGV[1] .. ':server:' .. ARGV[2]
local removed = redis.call('ZREM', key .. ':leases', ARGV[3])
redis.call('HDEL', key .. ':costs', ARGV[3])
local outcome = ARGV[4]
if outcome == 'ok' then
  if redis.call('HGET', key, 'state') == 'open' then
    redis.call('HSET', key, 'state', 'closed', 'limit', 1, 'reason', 'trial request succeeded: slow start')
  end
  if tonumber(redis.call('HGET', key, 'fails') or '0') > 0 then redis.call('HSET', key, 'fails', 0) end
  if tonumber(redis.call('HGET', key, 'opens') or '0') > 0 then redis.call('HSET', key, 'opens', 0) end
  redis.call('HINCRBY', key, 'ok', 1)
elseif outcome == 'reject' then
  redis.call('HINCRBY', key, 'rejections', 1)
elseif outcome == 'fail' then
  local fails = redis.call('HINCRBY', key, 'fails', 1)
  local state = redis.call('HGET', key, 'state') or 'closed'
  if fails >= tonumber(ARGV[5]) or state == 'open' then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local opens = redis.call('HINCRBY', key, 'opens', 1)
    local cooldown = math.min(tonumber(ARGV[6]) * 2 ^ math.min(opens - 1, 5), 60000)
    redis.call('HSET', key, 'state', 'open', 'open_until', now + cooldown,
               'reason', 'circuit open after ' .. fails .. ' failed request(s)', 'changed_at', now)
  end
end
redis.call('PUBLISH', ARGV[1] .. ':released', ARGV[2])
return removed
"""

# ARGV: prefix, lease_ttl_ms, then server/lease pairs
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local kept = 0
for i = 3, #ARGV, 2 do
  kept = kept + redis.call('ZADD', ARGV[1] .. ':server:' .. ARGV[i] .. ':leases', 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[i + 1])
end
return kept
"""

# ARGV: prefix, ticket
_CANCEL = """
redis.call('ZREM', ARGV[1] .. ':waiting', ARGV[2])
redis.call('HDEL', ARGV[1] .. ':tickets', ARGV[2])
redis.call('ZREM', ARGV[1] .. ':ticket-expiry', ARGV[2])
redis.call('PUBLISH', ARGV[1] .. ':released', '')
return 1
"""


class NoServer(Exception):
    """No vLLM server takes requests now: every circuit is open or every limit is zero."""


class PermitTimeout(Exception):
    """No permit came free before the deadline."""


@dataclass(frozen=True)
class Lease:
    server: str
    lease_id: str
    cost: int
    waited: float  # seconds spent in the waiting room


class Permits:
    """One per worker process; thread-safe. Hands out leases on the servers named by id."""

    def __init__(
        self,
        conn: redis.Redis,
        servers: Sequence[str],
        *,
        lease_ttl: float = 8.0,
        failures_to_open: int = 3,
        cooldown: float = 2.0,
        prefix: str = PREFIX,
    ) -> None:
        if not servers:
            raise ValueError("Permits needs at least one server id")
        self.conn = conn
        self.servers = list(servers)
        self.prefix = prefix
        self.lease_ttl_ms = int(lease_ttl * 1000)
        self.ticket_ttl_ms = max(3000, self.lease_ttl_ms // 2)
        self.failures_to_open = failures_to_open
        self.cooldown_ms = int(cooldown * 1000)
        self._acquire = conn.register_script(_ACQUIRE)
        self._release = conn.register_script(_RELEASE)
        self._renew = conn.register_script(_RENEW)
        self._cancel = conn.register_script(_CANCEL)
        # In every lease id, so whoever looks at Redis sees which process holds which permit.
        self.holder = f"{socket.gethostname()}/{os.getpid()}"
        self._held: dict[str, str] = {}  # lease id → server
        self._lock = threading.Lock()
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # -- waiting room -------------------------------------------------------------------------
    def acquire(self, cost: int, fair_key: str, deadline: float, *, servers: Iterable[str] | None = None) -> Lease:
        """Block until a lease is granted; `NoServer` when none takes requests, `PermitTimeout` at `deadline` (monotonic)."""
        self._start_threads()
        ticket = f"{self.holder}/{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        ids = list(servers) if servers is not None else self.servers
        try:
            while True:
                status, detail = self._acquire(
                    args=[self.prefix, ticket, max(1, int(cost)), fair_key or "-", self.ticket_ttl_ms, self.lease_ttl_ms, *ids]
                )
                detail = detail.decode() if isinstance(detail, bytes) else str(detail)
                if status == 1:
                    lease_id, ticket = ticket, ""
                    with self._lock:
                        self._held[lease_id] = detail
                    return Lease(detail, lease_id, int(cost), time.monotonic() - started)
                if status == 2:
                    raise NoServer(detail)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PermitTimeout(f"no vLLM permit within the deadline ({detail})")
                with self._wake:
                    self._wake.wait(min(remaining, 0.25))
        finally:
            if ticket:
                self._cancel(args=[self.prefix, ticket])

    def release(self, lease: Lease, outcome: str = "ok") -> None:
        """Give the permit back; `outcome` (ok, fail, reject, none) feeds the server's circuit breaker."""
        with self._lock:
            self._held.pop(lease.lease_id, None)
        self._release(args=[self.prefix, lease.server, lease.lease_id, outcome, self.failures_to_open, self.cooldown_ms])

    def close(self) -> None:
        """Stop the background threads; they leave within a second, closing their Redis subscription."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)

    # -- background: keep leases alive, wake waiters when a permit frees ------------------------
    def _start_threads(self) -> None:
        with self._lock:
            if self._threads:
                return
        self._threads = [
            threading.Thread(target=self._renew_loop, name="ocrhub-lease-renewer", daemon=True),
            threading.Thread(target=self._listen_loop, name="ocrhub-lease-wakeups", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        _open.add(self)

    def _renew_loop(self) -> None:
        period = max(0.2, self.lease_ttl_ms / 1000 / 4)
        while not self._stop.wait(period):
            with self._lock:
                pairs = [x for lease_id, server in self._held.items() for x in (server, lease_id)]
            if not pairs:
                continue
            try:
                self._renew(args=[self.prefix, self.lease_ttl_ms, *pairs])
            except (redis.RedisError, OSError, ValueError):
                continue  # the next round tries again; a lease lives lease_ttl, four rounds

    def _listen_loop(self) -> None:
        while not self._stop.is_set():
            pubsub = self.conn.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(f"{self.prefix}:released")
                while not self._stop.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
                        with self._wake:
                            self._wake.notify_all()
            except (redis.RedisError, OSError, ValueError):  # ValueError: the client was closed under us
                self._stop.wait(1.0)
            finally:
                # Closed here, by its own thread: left to the garbage collector at interpreter exit, a
                # subscription waits for a pool lock that a frozen daemon thread may hold, for ever.
                try:
                    pubsub.close()
                except (redis.RedisError, OSError, ValueError):
                    pass


_open: weakref.WeakSet[Permits] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit, before daemon threads are frozen: stop every renewer and listener cleanly."""
    for permits in list(_open):
        permits.close()
