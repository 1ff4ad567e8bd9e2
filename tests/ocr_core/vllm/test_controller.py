"""The limit controller against the vLLM emulator's real /health and /metrics, with leases in a real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from ocr_core.limits.leases import Permits
from ocr_core.vllm import servers
from ocr_core.vllm.controller import Controller, Policy
from tests.emulators.vllm import VllmEmulator

FAST = {"tick": 0.05, "interval": 0.2, "stale_after": 0.6, "cooldown": 0.2}


@pytest.fixture
def emulator() -> Iterator[VllmEmulator]:
    with VllmEmulator(max_num_seqs=8) as vllm:
        yield vllm


def ticks(controller: Controller, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        controller.tick()
        time.sleep(controller.policy.tick)


def state(conn: redis.Redis, controller: Controller) -> servers.ServerState:
    [sid] = controller.ids
    return servers.read(conn, sid)


def flood(emulator: VllmEmulator, count: int) -> list[threading.Thread]:
    body = {"model": "tencent/HunyuanOCR", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400}
    threads = [threading.Thread(target=httpx.post, args=(f"{emulator.base_url}/chat/completions",), kwargs={"json": body, "timeout": 60}) for _ in range(count)]
    for t in threads:
        t.start()
    return threads


def test_auto_raises_the_limit_while_the_server_keeps_up_and_ocrhub_uses_it(conn: redis.Redis, emulator: VllmEmulator) -> None:
    controller = Controller(conn, [emulator.url], Policy(auto=True, start=2, max_limit=5, **FAST))
    permits = Permits(conn, list(controller.ids))
    held = []
    deadline = time.monotonic() + 10
    while state(conn, controller).target < 5 and time.monotonic() < deadline:
        while len(held) < state(conn, controller).limit:  # demand: every permit in use
            held.append(permits.acquire(1, "c", time.monotonic() + 1))
        ticks(controller, 0.1)
    final = state(conn, controller)
    assert (final.target, final.limit) == (5, 5)  # and no further than the bound
    assert "raised to 5" in final.reason
    for lease in held:
        permits.release(lease)
    permits.close()


def test_auto_does_not_raise_a_limit_nobody_uses(conn: redis.Redis, emulator: VllmEmulator) -> None:
    controller = Controller(conn, [emulator.url], Policy(auto=True, start=2, max_limit=5, **FAST))
    ticks(controller, 1.0)
    assert state(conn, controller).target == 2


def test_auto_cuts_when_requests_wait_inside_vllm(conn: redis.Redis, emulator: VllmEmulator) -> None:
    emulator.set(max_num_seqs=1, step_base=0.02)
    controller = Controller(conn, [emulator.url], Policy(auto=True, start=8, **FAST))
    threads = flood(emulator, 6)
    ticks(controller, 1.0)
    after = state(conn, controller)
    assert after.target < 8 and "waiting inside vLLM" in after.reason
    emulator.set(max_num_seqs=16)
    for t in threads:
        t.join()


def test_auto_lets_one_batch_wait_inside_vllm(conn: redis.Redis, emulator: VllmEmulator) -> None:
    # Four running and four waiting: the waiting ones are being prepared for the next batch.
    emulator.set(max_num_seqs=4, step_base=0.02)
    controller = Controller(conn, [emulator.url], Policy(auto=True, start=8, **FAST))
    threads = flood(emulator, 8)
    ticks(controller, 1.0)
    assert state(conn, controller).target == 8, state(conn, controller).reason
    emulator.set(max_num_seqs=16)
    for t in threads:
        t.join()


def test_auto_cuts_on_preemptions(conn: redis.Redis, emulator: VllmEmulator) -> None:
    emulator.set(kv_tokens=256, max_num_seqs=8, step_base=0.01)
    controller = Controller(conn, [emulator.url], Policy(auto=True, start=8, **FAST))
    ticks(controller, 0.1)
    threads = flood(emulator, 4)
    ticks(controller, 1.5)
    after = state(conn, controller)
    assert after.target < 8 and ("preemption" in after.reason or "KV cache" in after.reason), after.reason
    assert after.kv_tokens == int(256 * 0.9)  # the capacity it read from vllm:cache_config_info
    emulator.set(kv_tokens=None)
    for t in threads:
        t.join()


def test_a_dead_server_opens_its_circuit_and_comes_back_by_slow_start(conn: redis.Redis, emulator: VllmEmulator) -> None:
    controller = Controller(conn, [emulator.url], Policy(auto=False, fixed=8, **FAST))
    ticks(controller, 0.2)
    assert state(conn, controller).limit == 8
    emulator.set(down=True)
    ticks(controller, 0.3)
    down = state(conn, controller)
    assert down.state == "open", down
    assert "health check failed" in down.reason
    emulator.set(down=False)
    seen = set()
    deadline = time.monotonic() + 5
    while state(conn, controller).state == "open" or state(conn, controller).limit < 8:
        assert time.monotonic() < deadline, state(conn, controller)
        controller.tick()
        if state(conn, controller).state == "closed":
            seen.add(state(conn, controller).limit)
        time.sleep(0.05)
    assert state(conn, controller).state == "closed"
    assert {1, 2, 4, 8} <= seen  # doubled from one, not all at once


def test_stale_metrics_count_as_overload(conn: redis.Redis, emulator: VllmEmulator) -> None:
    controller = Controller(conn, [emulator.url], Policy(auto=True, start=8, health_failures_to_open=1000, **FAST))
    ticks(controller, 0.3)
    emulator.set(health_status=200, down=True)
    ticks(controller, 1.2)
    after = state(conn, controller)
    assert after.target < 8 and "stale" in after.reason


def test_only_one_controller_acts(conn: redis.Redis, emulator: VllmEmulator) -> None:
    a = Controller(conn, [emulator.url], Policy(auto=True, **FAST))
    b = Controller(conn, [emulator.url], Policy(auto=True, **FAST))
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,)) for c in (a, b)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    holder = conn.get("ocrhub:vllm:controller").decode()
    assert holder in {a.token, b.token}
    stop.set()
    for t in threads:
        t.join()
