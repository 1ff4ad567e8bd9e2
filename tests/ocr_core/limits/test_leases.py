"""vLLM permits on a real redis-server: limits held across threads and processes, fairness, expiry, circuits."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from ocr_core.limits.leases import NoServer, Permits, PermitTimeout
from ocr_core.vllm import servers

URL_A, URL_B = "http://127.0.0.1:1", "http://127.0.0.1:2"


def soon(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


@pytest.fixture(autouse=True)
def closed_after_each_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every Permits a test makes is closed at its end, its threads gone with it."""
    made: list[Permits] = []
    original = Permits.__init__

    def tracked(self: Permits, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Permits, "__init__", tracked)
    yield
    for permits in made:
        permits.close()


@pytest.fixture
def one_server(conn: redis.Redis) -> tuple[Permits, str]:
    sid = servers.register(conn, URL_A, 4)
    return Permits(conn, [sid], lease_ttl=2.0), sid


def test_many_threads_never_hold_more_than_the_limit(one_server: tuple[Permits, str], conn: redis.Redis) -> None:
    permits, sid = one_server
    peak, inside, lock = 0, 0, threading.Lock()

    def worker() -> None:
        nonlocal peak, inside
        for _ in range(5):
            lease = permits.acquire(100, "chat", soon())
            with lock:
                inside += 1
                peak = max(peak, inside)
            assert servers.read(conn, sid).in_flight <= 4
            time.sleep(0.01)
            with lock:
                inside -= 1
            permits.release(lease)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 4
    assert servers.read(conn, sid).in_flight == 0


def test_a_killed_holder_loses_its_permits_within_the_lease_time(conn: redis.Redis, redis_server) -> None:
    sid = servers.register(conn, URL_A, 2)
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import time, redis\n"
            "from ocr_core.limits.leases import Permits\n"
            f"p = Permits(redis.Redis.from_url({redis_server.url!r}), [{sid!r}], lease_ttl=2.0)\n"
            "p.acquire(1, 'a', time.monotonic() + 10); p.acquire(1, 'a', time.monotonic() + 10)\n"
            "print('held', flush=True); time.sleep(60)\n"
        )],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        time.sleep(3)  # renewed while alive: still held
        assert servers.read(conn, sid).in_flight == 2
        holder.kill()
        holder.wait()
        killed = time.monotonic()
        permits = Permits(conn, [sid], lease_ttl=2.0)
        permits.acquire(1, "b", soon())
        permits.acquire(1, "b", soon())
        assert time.monotonic() - killed < 3.0
        assert servers.read(conn, sid).in_flight == 2
    finally:
        holder.kill()


def test_a_large_request_takes_the_room_of_several_small_ones(conn: redis.Redis) -> None:
    sid = servers.register(conn, URL_A, 16)
    conn.hset(servers.server_key(sid), "kv_tokens", 1000)
    permits = Permits(conn, [sid])
    big = permits.acquire(800, "a", soon())
    small = [permits.acquire(100, "b", soon()), permits.acquire(100, "c", soon())]
    with pytest.raises(PermitTimeout):
        permits.acquire(100, "d", soon(0.5))
    permits.release(big)
    for _ in range(8):
        small.append(permits.acquire(100, "d", soon()))
    assert servers.read(conn, sid).in_flight == 10
    # Alone, a request larger than the whole room still gets in.
    for lease in small:
        permits.release(lease)
    permits.release(permits.acquire(5000, "e", soon()))


def _order_of_grants(permits: Permits, requests: list[tuple[int, str]], holder) -> list[int]:  # noqa: ANN001
    """Queue `requests` (cost, chat) behind a held server, then free it and record who goes first."""
    order, threads = [], []
    lock = threading.Lock()

    def wait(index: int, cost: int, chat: str) -> None:
        lease = permits.acquire(cost, chat, soon(30))
        with lock:
            order.append(index)
        time.sleep(0.005)
        permits.release(lease)

    for index, (cost, chat) in enumerate(requests):
        threads.append(threading.Thread(target=wait, args=(index, cost, chat)))
        threads[-1].start()
        time.sleep(0.01)  # tickets arrive in this order
    permits.release(holder)
    for t in threads:
        t.join()
    return order


def test_small_images_go_first(conn: redis.Redis) -> None:
    sid = servers.register(conn, URL_A, 1)
    permits = Permits(conn, [sid])
    holder = permits.acquire(1, "x", soon())
    order = _order_of_grants(permits, [(5000, "a"), (5000, "b"), (100, "c"), (100, "d")], holder)
    assert set(order[:2]) == {2, 3}


def test_one_chats_flood_does_not_starve_another_chat(conn: redis.Redis) -> None:
    sid = servers.register(conn, URL_A, 1)
    permits = Permits(conn, [sid])
    holder = permits.acquire(1, "x", soon())
    flood = [(100, "flood")] * 30
    order = _order_of_grants(permits, [*flood, (100, "other")], holder)
    assert order.index(30) <= 2, order


def test_requests_spread_by_free_capacity(conn: redis.Redis) -> None:
    a, b = servers.register(conn, URL_A, 4), servers.register(conn, URL_B, 2)
    permits = Permits(conn, [a, b])
    leases = [permits.acquire(1, "c", soon()) for _ in range(6)]
    assert sorted(lease.server for lease in leases).count(a) == 4
    assert servers.read(conn, b).in_flight == 2
    with pytest.raises(PermitTimeout):
        permits.acquire(1, "c", soon(0.3))


def test_failures_open_the_circuit_and_a_trial_closes_it(conn: redis.Redis) -> None:
    a, b = servers.register(conn, URL_A, 4), servers.register(conn, URL_B, 4)
    permits = Permits(conn, [a, b], failures_to_open=3, cooldown=0.5)
    for _ in range(3):
        lease = permits.acquire(1, "c", soon(), servers=[a])
        permits.release(lease, "fail")
    assert servers.read(conn, a).state == "open"
    assert permits.acquire(1, "c", soon()).server == b  # the open server is skipped
    with pytest.raises(NoServer):
        permits.acquire(1, "c", soon(), servers=[a])
    time.sleep(0.6)
    trial = permits.acquire(1, "c", soon(), servers=[a])  # half-open: one trial request
    with pytest.raises(PermitTimeout):
        permits.acquire(1, "c", soon(0.3), servers=[a])
    permits.release(trial, "ok")
    state = servers.read(conn, a)
    assert (state.state, state.limit) == ("closed", 1)  # slow start from one
    permits.release(permits.acquire(1, "c", soon(), servers=[a]), "fail")
    assert servers.read(conn, a).state == "closed"  # one failure after a success does not reopen it


def test_a_failed_trial_reopens_with_a_longer_cooldown(conn: redis.Redis) -> None:
    a = servers.register(conn, URL_A, 4)
    permits = Permits(conn, [a], failures_to_open=1, cooldown=0.3)
    permits.release(permits.acquire(1, "c", soon()), "fail")
    first = servers.read(conn, a).open_until_ms
    time.sleep(0.35)
    permits.release(permits.acquire(1, "c", soon()), "fail")
    state = servers.read(conn, a)
    assert state.state == "open" and state.open_until_ms - first >= 500
