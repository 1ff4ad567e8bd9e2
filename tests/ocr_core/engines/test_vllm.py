"""The vllm engine against the vLLM emulator over real HTTP, with permits in a real Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from PIL import Image

from ocr_core.engines import ReadRequest
from ocr_core.engines.vllm import VllmEngine, configuration_problems
from ocr_core.errors import Deferred, TransientError
from ocr_core.vllm import servers
from ocrhub.settings import load_settings
from tests.emulators.vllm import VllmEmulator
from tests.emulators.vllm_prompt import pixel_text_image


@pytest.fixture
def emulator() -> Iterator[VllmEmulator]:
    with VllmEmulator(max_num_seqs=4, step_base=0.002, step_per_seq=0.0002) as vllm:
        yield vllm


def make_engine(conn: redis.Redis, *urls: str, **overrides: object) -> VllmEngine:
    values = {"vllm_urls": ",".join(urls), "ocr_engine": "vllm", "vllm_timeout": 5.0, "vllm_max_tokens": 256, **overrides}
    engine = VllmEngine(settings=load_settings(**values), conn=conn)
    return engine


def soon(seconds: float = 20.0) -> ReadRequest:
    return ReadRequest(deadline=time.monotonic() + seconds, fair_key="chat")


@pytest.fixture
def engines() -> Iterator[list[VllmEngine]]:
    made: list[VllmEngine] = []
    yield made
    for engine in made:
        engine.close()


def test_reads_the_text_through_vllm(conn: redis.Redis, emulator: VllmEmulator, engines: list) -> None:
    engine = make_engine(conn, emulator.url)
    engines.append(engine)
    reading = engine.read(pixel_text_image("发票号码 0042\nTotal 12.50"), soon())
    assert reading.engine == "vllm"
    assert [line.text for line in reading.lines] == ["发票号码 0042", "Total 12.50"]
    assert servers.read(conn, servers.server_id(emulator.url)).ok == 1


def test_many_threads_stay_within_the_limit(conn: redis.Redis, emulator: VllmEmulator, engines: list) -> None:
    engine = make_engine(conn, emulator.url, vllm_concurrency="3")
    engines.append(engine)
    emulator.set(step_base=0.01)
    texts = [" ".join(f"w{i}-{k}" for k in range(20)) for i in range(12)]
    read: list[str] = []
    threads = [threading.Thread(target=lambda t=t: read.append(engine.read(pixel_text_image(t), soon()).lines[0].text)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = emulator.stats()
    assert sorted(read) == sorted(texts)
    assert stats["completed"] == 12 and stats["peak_inflight"] == 3
    assert servers.read(conn, servers.server_id(emulator.url)).in_flight == 0


def test_a_503_is_back_pressure_not_a_failure(conn: redis.Redis, emulator: VllmEmulator, engines: list) -> None:
    # Refused both ways vLLM refuses: a plain 503, and an error event inside a 200 stream (after rendering).
    emulator.set(max_num_queued_reqs=2, render_s=0.01, step_base=0.01)
    engine = make_engine(conn, emulator.url, vllm_concurrency="8")
    engines.append(engine)
    texts = [" ".join(f"n{i}-{k}" for k in range(12)) for i in range(10)]
    results: list[str] = []
    threads = [threading.Thread(target=lambda t=t: results.append(engine.read(pixel_text_image(t), soon()).lines[0].text)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = servers.read(conn, servers.server_id(emulator.url))
    assert sorted(results) == sorted(texts)
    assert emulator.stats()["rejected_503"] > 0
    assert state.rejections > 0 and state.state == "closed" and state.fails == 0


def test_a_looping_answer_is_stopped_and_trimmed(conn: redis.Redis, emulator: VllmEmulator, engines: list) -> None:
    emulator.set(repeat=True)
    engine = make_engine(conn, emulator.url, vllm_max_tokens=2000)
    engines.append(engine)
    started = time.monotonic()
    reading = engine.read(Image.new("RGB", (300, 200), "white"), soon())
    text = "\n".join(line.text for line in reading.lines)
    assert text.count("the same line") == 1
    assert time.monotonic() - started < 2000 * 0.002  # stopped long before max_tokens


def test_a_failing_server_is_skipped_for_a_healthy_one(conn: redis.Redis, emulator: VllmEmulator, engines: list) -> None:
    with VllmEmulator(max_num_seqs=4, step_base=0.002) as broken:
        broken.set(fail_status=502, fail_times=1000)
        engine = make_engine(conn, broken.url, emulator.url, vllm_concurrency="4")
        engines.append(engine)
        for i in range(6):
            assert engine.read(pixel_text_image(f"x{i}"), soon()).lines[0].text == f"x{i}"
        assert servers.read(conn, servers.server_id(broken.url)).state == "open"


def test_every_server_down_waits_in_redis_or_falls_back(conn: redis.Redis, emulator: VllmEmulator, engines: list) -> None:
    emulator.set(down=True)
    waiting = make_engine(conn, emulator.url, vllm_timeout=1.0)
    engines.append(waiting)
    with pytest.raises((Deferred, TransientError)):
        waiting.read(pixel_text_image("a"), soon())
    with pytest.raises(Deferred):
        waiting.read(pixel_text_image("a"), soon())  # the circuit is open now: no request is even tried
    falling = make_engine(conn, emulator.url, vllm_fallback="rapidocr")
    engines.append(falling)
    image = Image.new("RGB", (400, 100), "white")
    reading = falling.read(image, soon())
    assert reading.engine == "rapidocr"


def test_an_api_key_is_sent(conn: redis.Redis, engines: list) -> None:
    with VllmEmulator(api_key="s3cret", step_base=0.002) as guarded:
        engine = make_engine(conn, guarded.url, vllm_api_key="s3cret")
        engines.append(engine)
        assert engine.read(pixel_text_image("ok"), soon()).lines[0].text == "ok"


def test_configuration_problems_name_the_setting() -> None:
    assert "OCRHUB_VLLM_URLS" in configuration_problems(load_settings(ocr_engine="vllm"))[0]
    problems = configuration_problems(load_settings(ocr_engine="vllm", vllm_urls="http://x:1", vllm_fallback="tesseract"))
    assert problems and "OCRHUB_VLLM_FALLBACK" in problems[0]


def test_a_wrong_model_or_key_is_retried_with_the_setting_named(conn: redis.Redis, emulator: VllmEmulator, engines: list) -> None:
    engine = make_engine(conn, emulator.url, vllm_model="tencent/NotThere")
    engines.append(engine)
    with pytest.raises(TransientError, match="OCRHUB_VLLM_MODEL"):
        engine.read(pixel_text_image("x"), soon())
    with VllmEmulator(api_key="right", step_base=0.002) as guarded:
        engine = make_engine(conn, guarded.url, vllm_api_key="wrong")
        engines.append(engine)
        with pytest.raises(TransientError, match="OCRHUB_VLLM_API_KEY"):
            engine.read(pixel_text_image("x"), soon())
    assert servers.read(conn, servers.server_id(emulator.url)).fails == 0  # not the server's fault
