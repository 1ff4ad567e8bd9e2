"""The one controller of the vLLM limits: health, circuit breakers, slow start, and `auto`.

Every worker process runs a candidate; the one holding a short lock in Redis acts, the others wait
to take over when it dies. Each tick it reads every server's `/health` and `/metrics`; every
`interval` it may move a server's target limit:

- cut (×0.7–0.8) when more requests wait inside vLLM than it runs at once (or than a little
  headroom), they queue longer than vLLM takes to serve one,
  the KV cache is nearly full, preemptions rise, vLLM refuses requests (503), or the metrics are
  stale (a server that cannot say how it is doing counts as overloaded);
- raise by one when the server kept up while ocrhub used the whole limit;
- always within [min_limit, max_limit].

The limit in force climbs to the target by slow start (doubling per tick), so a server that comes
back is not hit by every waiting worker at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import redis

from ocr_core.limits.leases import PREFIX
from ocr_core.vllm import metrics, servers

log = logging.getLogger(__name__)

# Compare-and-extend: only the holder renews the controller lock.
_HOLD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""


@dataclass(frozen=True)
class Policy:
    auto: bool
    fixed: int = 16  # per server, when not auto
    min_limit: int = 1
    max_limit: int = 64
    start: int = 4
    tick: float = 0.5
    interval: float = 2.0
    stale_after: float = 3.0
    health_failures_to_open: int = 2
    cooldown: float = 2.0
    kv_fraction: float = 0.9  # of the server's KV capacity that admitted requests may claim
    kv_tokens: int = 0  # set: use this capacity instead of the server's own figure

    @property
    def initial(self) -> int:
        return max(self.min_limit, min(self.max_limit, self.start)) if self.auto else self.fixed


@dataclass
class _Window:
    samples: list[metrics.Snapshot] = field(default_factory=list)
    saturated: int = 0
    last: metrics.Snapshot | None = None  # the scrape before this window, for counters
    last_ok: float = 0.0
    health_failures: int = 0
    rejections_seen: int = -1
    held_until: float = 0.0
    decided_at: float = 0.0


class Controller:
    def __init__(
        self,
        conn: redis.Redis,
        urls: Sequence[str],
        policy: Policy,
        *,
        model: str = "",
        api_key: str = "",
        http: httpx.Client | None = None,
        prefix: str = PREFIX,
    ) -> None:
        self.conn = conn
        self.policy = policy
        self.model = model
        self.prefix = prefix
        self.http = http or httpx.Client(timeout=httpx.Timeout(2.0), headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
        self.ids = {servers.register(conn, url, policy.initial, prefix=prefix): url.rstrip("/") for url in urls}
        self.windows = {sid: _Window() for sid in self.ids}
        self.token = uuid.uuid4().hex
        self._hold = conn.register_script(_HOLD)

    def run(self, stop: threading.Event) -> None:
        """Act while holding the controller lock; otherwise wait to take over."""
        while not stop.is_set():
            try:
                if self._hold(keys=[f"{self.prefix}:controller"], args=[self.token, int(self.policy.tick * 6000)]):
                    self.tick()
            except (redis.RedisError, httpx.HTTPError) as exc:
                log.warning("vLLM controller: %s", exc)
            stop.wait(self.policy.tick)

    def tick(self) -> None:
        now = time.monotonic()
        for sid, url in self.ids.items():
            switched = self._observe(sid, url, now)
            state = servers.read(self.conn, sid, prefix=self.prefix)
            window = self.windows[sid]
            window.saturated += state.in_flight >= state.limit > 0
            if self.policy.auto and now - window.decided_at >= self.policy.interval:
                self._decide(sid, state, window, now)
            if not switched:  # a circuit that just closed starts from one request, for one tick at least
                self._slow_start(sid, servers.read(self.conn, sid, prefix=self.prefix))

    # -- observing ---------------------------------------------------------------------------------
    def _observe(self, sid: str, url: str, now: float) -> bool:
        """Scrape the server; open or close its circuit on its health. True when the circuit switched."""
        window = self.windows[sid]
        switched = False
        healthy, error = self._get(f"{url}/health")
        snapshot = None
        if healthy is not None:
            text, error = self._get(f"{url}/metrics")
            if text is not None:
                snapshot = metrics.parse(text, model=self.model, at=now)
                window.samples.append(snapshot)
                window.last_ok = now
        window.health_failures = 0 if healthy is not None else window.health_failures + 1
        state = servers.read(self.conn, sid, prefix=self.prefix)
        if healthy is None and window.health_failures >= self.policy.health_failures_to_open and state.state != "open":
            servers.open_circuit(self.conn, sid, f"health check failed: {error}", self.policy.cooldown, prefix=self.prefix)
            log.warning("vLLM %s: circuit open (health check failed: %s)", url, error)
            switched = True
        elif healthy is not None and state.state == "open" and time.time() * 1000 >= state.open_until_ms:
            servers.close_circuit(self.conn, sid, "healthy again: slow start", prefix=self.prefix)
            log.info("vLLM %s: healthy again, slow start", url)
            switched = True
        kv = self.policy.kv_tokens or int((snapshot.kv_tokens if snapshot else 0) * self.policy.kv_fraction)
        if kv and kv != state.kv_tokens:
            self.conn.hset(servers.server_key(sid, self.prefix), "kv_tokens", kv)
        servers.save_metrics(
            self.conn,
            sid,
            {
                "healthy": healthy is not None,
                "error": error,
                "scraped_at": time.time(),
                **({"running": snapshot.running, "waiting": snapshot.waiting, "kv_usage": snapshot.kv_usage,
                    "preemptions": snapshot.preemptions, "kv_capacity_tokens": snapshot.kv_tokens} if snapshot else {}),
            },
            prefix=self.prefix,
        )
        return switched

    def _get(self, url: str) -> tuple[str | None, str]:
        try:
            response = self.http.get(url)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return None, f"HTTP {response.status_code}"
        return response.text, ""

    # -- deciding ----------------------------------------------------------------------------------
    def _decide(self, sid: str, state: servers.ServerState, window: _Window, now: float) -> None:
        policy = self.policy
        samples, previous = window.samples, window.last
        intervals = max(1, round((now - window.decided_at) / policy.tick)) if window.decided_at else max(1, len(samples))
        saturated = window.saturated >= max(1, intervals // 2)
        window.samples, window.saturated, window.decided_at = [], 0, now
        window.last = samples[-1] if samples else previous
        rejected = state.rejections - window.rejections_seen if window.rejections_seen >= 0 else 0
        window.rejections_seen = state.rejections

        target = state.target or policy.initial
        cut, reason = 1.0, ""
        if state.state == "open":
            return
        if now - window.last_ok > policy.stale_after:
            cut, reason = 0.5, f"metrics stale for {now - window.last_ok:.0f} s"
        elif samples:
            first = previous or samples[0]
            newest = samples[-1]
            preempted = newest.preemptions - first.preemptions
            refused = max(rejected, newest.rejections - first.rejections)
            waiting = sum(s.waiting for s in samples) / len(samples)
            queued = newest.queue_time_count - first.queue_time_count
            queue_time = (newest.queue_time_sum - first.queue_time_sum) / queued if queued > 0 else 0.0
            served = newest.inference_time_count - first.inference_time_count
            service_time = (newest.inference_time_sum - first.inference_time_sum) / served if served > 0 else 0.0
            kv_peak = max(s.kv_usage for s in samples)
            # Up to one batch waiting inside vLLM keeps the batch full while the next images are
            # prepared (vLLM decodes and resizes an image before it schedules it); more only adds delay.
            batch = max(s.running for s in samples)
            headroom = max(2.0, 0.25 * target, batch)
            queue_limit = max(1.0, 1.5 * service_time)
            if refused > 0:
                cut, reason = 0.7, f"vLLM refused {refused:.0f} request(s) (503)"
            elif preempted > 0:
                cut, reason = 0.7, f"{preempted:.0f} preemption(s): KV cache too small for the load"
            elif kv_peak >= 0.95:
                cut, reason = 0.8, f"KV cache {kv_peak:.0%} full"
            elif waiting > headroom:
                cut, reason = 0.8, f"{waiting:.1f} request(s) waiting inside vLLM on average"
            elif queue_time > queue_limit:
                cut, reason = 0.8, f"requests queued {queue_time:.1f} s inside vLLM (served in {service_time:.1f} s)"
            elif saturated and now >= window.held_until and state.limit >= target:
                new = min(policy.max_limit, target + 1)
                if new != target:
                    servers.set_limit(self.conn, sid, limit=state.limit, target=new,
                                      reason=f"kept up at {target} (waiting {waiting:.1f}): raised to {new}", prefix=self.prefix)
                    log.info("vLLM %s: kept up at %d, limit raised to %d", self.ids[sid], target, new)
                return
        if cut < 1.0:
            new = max(policy.min_limit, min(target - 1, math.floor(target * cut)))
            window.held_until = now + policy.interval
            if new != target or reason != state.reason:
                servers.set_limit(self.conn, sid, limit=min(state.limit, new), target=new,
                                  reason=f"{reason}: cut to {new}" if new != target else f"{reason}: held at {new}", prefix=self.prefix)
                log.info("vLLM %s: %s, limit %d → %d", self.ids[sid], reason, target, new)

    def _slow_start(self, sid: str, state: servers.ServerState) -> None:
        target = state.target if self.policy.auto else self.policy.fixed
        if state.state == "open":
            return
        if state.limit > target or (not self.policy.auto and state.target != target):
            servers.set_limit(self.conn, sid, limit=min(state.limit, target), target=target, prefix=self.prefix)
        elif state.limit < target:
            new = min(target, max(state.limit + 1, state.limit * 2))
            servers.set_limit(self.conn, sid, limit=new, prefix=self.prefix)
