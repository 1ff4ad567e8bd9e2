"""The vLLM emulator against a real vLLM 0.32 (CPU build, tiny random model): the same burst at both, the same
shapes back. Opt-in: `bash tests/vllm_real/install.sh`, then `OCRHUB_TEST_VLLM_REAL=1 pytest -m vllm_real`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulators.vllm import VllmEmulator
from tests.emulators.vllm_metrics import ParsedFamily, parse_exposition
from tests.emulators.vllm_prompt import data_url, text_png

pytestmark = pytest.mark.vllm_real

MAX_NUM_SEQS = 2
MAX_NUM_QUEUED_REQS = 3
BURST = 8
COMPARED = {
    "vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge", "vllm:kv_cache_usage_perc": "gauge",
    "vllm:num_preemptions": "counter", "vllm:prompt_tokens": "counter", "vllm:generation_tokens": "counter",
    "vllm:request_success": "counter", "vllm:request_queue_time_seconds": "histogram", "vllm:cache_config_info": "gauge",
}


@dataclass
class Seen:
    """What one server answered to the burst."""

    model: str
    streams: list[list[str]] = field(default_factory=list)  # the stream burst's 200 answers
    statuses: list[int] = field(default_factory=list)  # the plain burst's
    rejected: list[httpx.Response] = field(default_factory=list)
    completion: dict[str, Any] = field(default_factory=dict)
    not_found: dict[str, Any] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    health: httpx.Response | None = None
    metrics: dict[str, ParsedFamily] = field(default_factory=dict)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = pytest.importorskip("tests.vllm_real.server", reason="tests/vllm_real/server.py is missing")
    if not server.available():
        pytest.skip("no real vLLM here: bash tests/vllm_real/install.sh first")
    with server.real_vllm(tmp_path_factory.mktemp("vllm"), max_num_seqs=MAX_NUM_SEQS, max_num_queued_reqs=MAX_NUM_QUEUED_REQS) as vllm:
        yield vllm


def _messages() -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(text_png("Total 42.00", (224, 112)))}},
        {"type": "text", "text": "Read the text."},
    ]}]


async def _burst(url: str) -> Seen:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        seen = Seen(model)
        body = {"model": model, "messages": _messages(), "max_tokens": 24, "temperature": 0.0,
                "stream": True, "stream_options": {"include_usage": True}}

        async def streamed() -> None:
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code == 200:
                    seen.streams.append([line async for line in response.aiter_lines() if line])
                else:  # refused at the preflight
                    await response.aread()
                    seen.rejected.append(response)

        async def plain() -> None:
            response = await client.post("/v1/chat/completions", json=plain_body)
            seen.statuses.append(response.status_code)
            if response.status_code != 200:
                seen.rejected.append(response)

        async def idle() -> None:
            while True:
                families = parse_exposition((await client.get("/metrics")).text)
                if all(v == 0 for name in ("vllm:num_requests_running", "vllm:num_requests_waiting")
                       for _, _, v in families[name].samples):
                    return
                await asyncio.sleep(0.2)

        plain_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        await asyncio.gather(*(streamed() for _ in range(BURST)))
        await idle()
        await asyncio.gather(*(plain() for _ in range(BURST)))
        await idle()
        seen.completion = (await client.post("/v1/chat/completions", json=plain_body)).json()
        seen.not_found = (await client.post("/v1/chat/completions", json={**plain_body, "model": "no/such-model"})).json()
        seen.models = (await client.get("/v1/models")).json()
        seen.health = await client.get("/health")
        seen.metrics = parse_exposition((await client.get("/metrics")).text)
        return seen


@pytest.fixture(scope="module")
def both(real: Any) -> tuple[Seen, Seen]:
    seen_real = asyncio.run(_burst(real.url))
    with VllmEmulator(model=seen_real.model, max_num_seqs=MAX_NUM_SEQS, max_num_queued_reqs=MAX_NUM_QUEUED_REQS,
                      max_model_len=4096, block_size=128, output_tokens=24, step_base=0.1, render_s=0.2) as emulator:
        seen_emulated = asyncio.run(_burst(emulator.url))
    return seen_real, seen_emulated


def _shape(value: Any) -> Any:
    """Keys all the way down, values only as their JSON type."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


def _chunks(stream: list[str]) -> tuple[list[dict[str, Any]], str]:
    return [json.loads(line.removeprefix("data: ")) for line in stream[:-1]], stream[-1]


def _label_names(family: ParsedFamily) -> set[str]:
    return {name for _, labels, _ in family.samples for name in labels} - {"le"}


def test_both_refuse_past_max_num_queued_reqs_with_the_same_503(both: tuple[Seen, Seen]) -> None:
    real, emulated = both
    assert real.rejected and emulated.rejected, (real.statuses, emulated.statuses)
    assert set(real.statuses) == set(emulated.statuses) == {200, 503}
    assert emulated.rejected[0].text == real.rejected[0].text
    assert list(emulated.rejected[0].headers) == list(real.rejected[0].headers)


def test_a_stream_refused_after_the_render_gets_the_same_error_event(both: tuple[Seen, Seen]) -> None:
    real, emulated = both
    refused = [[s for s in seen.streams if '"error"' in s[0]] for seen in (real, emulated)]
    assert refused[0] and refused[1], (len(refused[0]), len(refused[1]))
    assert refused[1][0] == refused[0][0]


def test_the_stream_chunks_have_the_same_shape(both: tuple[Seen, Seen]) -> None:
    real, emulated = both
    served = [next(s for s in seen.streams if '"error"' not in s[0]) for seen in (real, emulated)]
    (real_chunks, real_done), (emulated_chunks, emulated_done) = _chunks(served[0]), _chunks(served[1])
    assert real_done == emulated_done == "data: [DONE]"
    for pick in (lambda c: c[0], lambda c: c[1], lambda c: c[-2], lambda c: c[-1]):  # role, token, last token, usage
        assert _shape(pick(emulated_chunks)) == _shape(pick(real_chunks))
    assert real_chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_whole_answers_and_errors_have_the_same_shape(both: tuple[Seen, Seen]) -> None:
    real, emulated = both
    assert _shape(emulated.completion) == _shape(real.completion)
    assert _shape(emulated.models) == _shape(real.models)
    assert emulated.not_found == real.not_found
    assert real.health is not None and emulated.health is not None
    assert (emulated.health.status_code, emulated.health.content) == (real.health.status_code, real.health.content) == (200, b"")


def test_the_metrics_have_the_same_names_types_and_labels(both: tuple[Seen, Seen]) -> None:
    real, emulated = both
    assert {n: real.metrics[n].type for n in COMPARED} == COMPARED
    assert {n: emulated.metrics[n].type for n in COMPARED} == COMPARED
    for name in COMPARED:
        assert _label_names(emulated.metrics[name]) == _label_names(real.metrics[name]), name
    vllm_families = {n: f.type for n, f in real.metrics.items() if n.startswith("vllm:")}
    assert {n: emulated.metrics[n].type for n in vllm_families if n in emulated.metrics} == vllm_families
    has_admission_metric = "vllm:admission_rejections" in real.metrics
    assert ("vllm:admission_rejections" in emulated.metrics) == has_admission_metric
    buckets = {
        label: [lbl["le"] for n, lbl, _ in seen.metrics["vllm:request_queue_time_seconds"].samples if n.endswith("_bucket")]
        for label, seen in (("real", real), ("emulated", emulated))
    }
    assert buckets["emulated"] == buckets["real"]


def test_the_server_interface_is_where_this_file_expects_it() -> None:
    assert (Path(__file__).parent / "vllm_real" / "server.py").is_file()
