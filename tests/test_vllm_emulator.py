"""The vLLM emulator behaves as vLLM 0.32's OpenAI server does: answers, usage, batching limits, 503s,
preemption, outages, the error bodies and the /metrics families."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.emulators.vllm import VllmEmulator, VllmEmulatorProcess
from tests.emulators.vllm_metrics import REQUEST_LATENCY, parse_exposition
from tests.emulators.vllm_prompt import data_url, image_tokens, pixel_text_image, split_tokens, text_png
from tests.emulators.vllm_shapes import QUEUE_FULL

TEXT = "Invoice 2024-117 合计 ¥3,480.00"
FAST = {"step_base": 0.005, "step_per_seq": 0.0005, "prefill_tokens_per_s": 200000.0}


def messages(text: str | None = TEXT, size: tuple[int, int] = (280, 140)) -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(text_png(text, size))}},
        {"type": "text", "text": "Read the text."},
    ]}]


@pytest.fixture
def vllm() -> Iterator[VllmEmulator]:
    with VllmEmulator(**FAST) as emulator:
        yield emulator


def chat(emulator: VllmEmulator | VllmEmulatorProcess, **body: object) -> httpx.Response:
    return httpx.post(f"{emulator.base_url}/chat/completions", json={"model": emulator.model, "messages": messages(), **body}, timeout=30)


def metric(text: str, name: str, **labels: str) -> float:
    family = parse_exposition(text)[name]
    values = [v for n, lbl, v in family.samples if n in (name, name + "_total") and labels.items() <= lbl.items()]
    assert values, f"no {name} sample with {labels}"
    return values[0]


def test_answers_with_the_text_the_image_carries(vllm: VllmEmulator) -> None:
    body = chat(vllm).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["message"] == {"role": "assistant", "content": TEXT, "refusal": None, "annotations": None,
                                             "audio": None, "function_call": None, "reasoning": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    prompt = 3 + 5 + image_tokens(280, 140) + 2 + 4  # template, message, 10x5 patches, vision start/end, "Read the text."
    assert body["usage"] == {"prompt_tokens": prompt, "total_tokens": prompt + len(split_tokens(TEXT)),
                             "completion_tokens": len(split_tokens(TEXT)), "prompt_tokens_details": None, "completion_tokens_details": None}


def test_reads_text_written_into_the_first_pixel_row(vllm: VllmEmulator) -> None:
    buffer = io.BytesIO()
    pixel_text_image("发票 0042\nTotal 12.50").save(buffer, "PNG")  # no text chunk: only the pixels say it
    content = [{"type": "image_url", "image_url": {"url": data_url(buffer.getvalue())}}]
    body = httpx.post(f"{vllm.base_url}/chat/completions", json={"model": vllm.model, "messages": [{"role": "user", "content": content}]}).json()
    assert body["choices"][0]["message"]["content"] == "发票 0042\nTotal 12.50"


def test_streams_one_chunk_per_token_then_usage_and_done(vllm: VllmEmulator) -> None:
    body = {"model": vllm.model, "messages": messages(), "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{vllm.base_url}/chat/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = chunks[1:-1]
    assert [c["choices"][0]["delta"]["content"] for c in tokens] == split_tokens(TEXT)
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * (len(tokens) - 1) + ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(tokens)


def test_the_openai_client_works_against_it() -> None:
    with VllmEmulator(api_key="sk-emulated", **FAST) as vllm:
        client = openai.OpenAI(base_url=vllm.base_url, api_key="sk-emulated", max_retries=0)
        assert [m.id for m in client.models.list()] == [vllm.model]
        answer = client.chat.completions.create(model=vllm.model, messages=messages(), max_tokens=512)
        assert answer.choices[0].message.content == TEXT and answer.usage.completion_tokens == len(split_tokens(TEXT))
        stream = client.chat.completions.create(model=vllm.model, messages=messages(), stream=True, stream_options={"include_usage": True})
        parts = list(stream)
        assert "".join(p.choices[0].delta.content or "" for p in parts if p.choices) == TEXT
        assert parts[-1].usage.completion_tokens == len(split_tokens(TEXT))
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=vllm.base_url, api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.chat.completions.create(model="other/model", messages=messages())


def test_errors_are_shaped_like_vllms() -> None:
    with VllmEmulator(api_key="k", **FAST) as vllm:
        unauthorized = httpx.post(f"{vllm.base_url}/chat/completions", json={}, headers={"Authorization": "Bearer nope"})
        assert (unauthorized.status_code, unauthorized.json()) == (401, {"error": "Unauthorized"})
        assert httpx.get(f"{vllm.url}/health").status_code == 200  # not under /v1: never guarded
        missing = httpx.post(f"{vllm.base_url}/chat/completions", headers={"Authorization": "Bearer k"},
                             json={"model": "nope", "messages": messages()})
        assert missing.status_code == 404
        assert missing.json() == {"error": {"message": f"The model `nope` does not exist. Valid aliases: {vllm.model}.",
                                            "type": "NotFoundError", "param": "model", "code": 404}}


def test_output_length_knobs(vllm: VllmEmulator) -> None:
    capped = chat(vllm, max_tokens=3).json()["choices"][0]
    assert (capped["message"]["content"], capped["finish_reason"]) == ("".join(split_tokens(TEXT)[:3]), "length")
    vllm.set(output_tokens=12)
    assert chat(vllm).json()["usage"]["completion_tokens"] == 12
    plain = httpx.post(f"{vllm.base_url}/chat/completions", json={"model": vllm.model, "messages": messages(None)}).json()
    assert plain["usage"]["completion_tokens"] == 12
    vllm.set(output_tokens=None, repeat=True)
    looping = chat(vllm, max_tokens=40).json()["choices"][0]
    assert looping["finish_reason"] == "length" and looping["message"]["content"].count("the same line") >= 5


async def _burst(emulator: VllmEmulator, count: int, **body: object) -> tuple[list[httpx.Response], list[tuple[float, float]]]:
    """`count` concurrent chats while /metrics is scraped; returns the answers and every (running, waiting) seen."""
    seen: list[tuple[float, float]] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as client:
        async def scrape() -> None:
            while True:
                lines = (await client.get(f"{emulator.url}/metrics")).text.splitlines()
                running, waiting = (float(next(line for line in lines if line.startswith(name + "{")).rsplit(" ", 1)[1])
                                    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"))
                seen.append((running, waiting))
                await asyncio.sleep(0.01)

        scraper = asyncio.create_task(scrape())
        payload = {"model": emulator.model, "messages": messages(), **body}
        answers = await asyncio.gather(*(client.post(f"{emulator.base_url}/chat/completions", json=payload) for _ in range(count)))
        scraper.cancel()
    return list(answers), seen


def test_at_most_max_num_seqs_run_and_the_rest_wait() -> None:
    with VllmEmulator(max_num_seqs=4, output_tokens=15, step_base=0.02, step_per_seq=0.001) as vllm:
        answers, seen = asyncio.run(_burst(vllm, 16))
        assert [a.status_code for a in answers] == [200] * 16
        assert (4.0, 12.0) in seen and max(r for r, _ in seen) == 4
        stats = vllm.stats()
        assert (stats["peak_running"], stats["peak_inflight"], stats["completed"]) == (4, 16, 16)
        assert any(sample[1:] == [4, 12] for sample in stats["timeline"])
        text = httpx.get(f"{vllm.url}/metrics").text
        assert metric(text, "vllm:request_success", finished_reason="stop") == 16
        assert metric(text, "vllm:generation_tokens") == 16 * 15
        queued = [v for n, lbl, v in parse_exposition(text)["vllm:request_queue_time_seconds"].samples if n.endswith("_count")]
        assert queued == [16.0]


def test_throughput_grows_with_the_batch() -> None:
    elapsed, steps = {}, {}
    for seqs in (1, 6):
        with VllmEmulator(max_num_seqs=seqs, output_tokens=8, step_base=0.02, step_per_seq=0.0005) as vllm:
            start = time.monotonic()
            asyncio.run(_burst(vllm, 6))
            elapsed[seqs], steps[seqs] = time.monotonic() - start, vllm.stats()["steps"]
    assert steps[1] == 48 and steps[6] < 16  # 8 tokens each: one request a step, or (nearly) all six
    assert elapsed[6] * 2 < elapsed[1]


def test_a_full_queue_answers_503_at_once() -> None:
    with VllmEmulator(max_num_seqs=1, max_num_queued_reqs=2, output_tokens=100, **FAST) as vllm:
        async def scenario() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                payload = {"model": vllm.model, "messages": messages()}
                first = [asyncio.create_task(client.post(f"{vllm.base_url}/chat/completions", json=payload)) for _ in range(2)]
                while vllm.stats()["inflight"] < 2:
                    await asyncio.sleep(0.005)
                started = time.monotonic()
                rejected = await client.post(f"{vllm.base_url}/chat/completions", json=payload)
                assert time.monotonic() - started < 1.0 and vllm.stats()["inflight"] == 2  # not queued behind them
                return [rejected, *await asyncio.gather(*first)]

        rejected, *served = asyncio.run(scenario())
        assert rejected.status_code == 503 and [r.status_code for r in served] == [200, 200]
        assert rejected.json() == {"error": {"message": QUEUE_FULL, "type": "Service Unavailable", "param": None, "code": 503}}
        assert rejected.headers["content-type"] == "application/json"
        assert vllm.stats()["rejected_503"] == 1
        text = httpx.get(f"{vllm.url}/metrics").text
        assert metric(text, "vllm:admission_rejections", reason="max_num_queued_reqs") == 1


def test_a_burst_that_passed_the_preflight_is_refused_inside_the_stream() -> None:
    """vLLM checks admission before rendering and again when adding the request: a stream refused at the second
    check has already answered 200, so its 503 comes as an SSE error event."""
    with VllmEmulator(max_num_seqs=2, max_num_queued_reqs=2, render_s=0.1, output_tokens=120, **FAST) as vllm:
        async def burst() -> list[list[str]]:
            async with httpx.AsyncClient(timeout=30) as client:
                payload = {"model": vllm.model, "messages": messages(), "stream": True}

                async def one() -> list[str]:
                    async with client.stream("POST", f"{vllm.base_url}/chat/completions", json=payload) as response:
                        assert response.status_code == 200
                        return [line async for line in response.aiter_lines() if line]

                return await asyncio.gather(*(one() for _ in range(4)))

        streams = asyncio.run(burst())
    refused = [s for s in streams if '"error"' in s[0]]
    assert len(refused) == 2 and len(streams) - len(refused) == 2
    error = {"error": {"message": QUEUE_FULL, "type": "Service Unavailable", "param": None, "code": 503}}
    assert refused[0] == [f"data: {json.dumps(error)}", "data: [DONE]"]


def test_a_tiny_kv_budget_preempts_and_recomputes() -> None:
    prompt = 3 + 5 + image_tokens(280, 140) + 2 + 4
    with VllmEmulator(max_num_seqs=8, kv_tokens=16 * 16, output_tokens=40, **FAST) as vllm:
        answers, _ = asyncio.run(_burst(vllm, 4))
        assert [a.json()["usage"]["completion_tokens"] for a in answers] == [40] * 4
        stats = vllm.stats()
        assert stats["preemptions"] > 0 and stats["peak_running"] >= 2
        text = httpx.get(f"{vllm.url}/metrics").text
        assert metric(text, "vllm:num_preemptions") == stats["preemptions"]
        assert metric(text, "vllm:prompt_tokens") == 4 * prompt
        assert metric(text, "vllm:kv_cache_usage_perc") == 0.0
        info = parse_exposition(text)["vllm:cache_config_info"].samples[0][1]
        assert (info["num_gpu_blocks"], info["block_size"]) == ("16", "16")


def test_down_refuses_connections_and_up_returns_on_the_same_port(vllm: VllmEmulator) -> None:
    port = vllm.port
    vllm.set(output_tokens=400)
    with httpx.stream("POST", f"{vllm.base_url}/chat/completions", json={"model": vllm.model, "messages": messages(), "stream": True}) as cut:
        lines = cut.iter_lines()
        assert next(lines).startswith("data: ")
        vllm.set(down=True)
        with pytest.raises(httpx.HTTPError):
            list(lines)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{vllm.url}/health")
    vllm.set(down=False)
    assert vllm.port == port and httpx.get(f"{vllm.url}/health").status_code == 200
    assert vllm.stats()["running"] == 0


def test_fault_knobs(vllm: VllmEmulator) -> None:
    vllm.set(fail_status=502, fail_times=2)
    assert [chat(vllm).status_code for _ in range(3)] == [502, 502, 200]
    vllm.set(health_status=500)
    assert httpx.get(f"{vllm.url}/health").status_code == 500
    vllm.set(slow=0.3)
    started = time.monotonic()
    chat(vllm)
    assert time.monotonic() - started >= 0.3
    vllm.set(slow=0.0, hang=True)

    async def held() -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as client:
            pending = asyncio.create_task(client.post(f"{vllm.base_url}/chat/completions", json={"model": vllm.model, "messages": messages()}))
            await asyncio.sleep(0.3)
            assert not pending.done() and vllm.stats()["held"] == 1
            vllm.release()
            return await pending

    assert asyncio.run(held()).json()["choices"][0]["message"]["content"] == TEXT
    vllm.reset()
    assert vllm.stats()["requests"] == 0 and httpx.get(f"{vllm.url}/health").status_code == 200


def test_metrics_have_vllms_names_types_labels_and_buckets(vllm: VllmEmulator) -> None:
    chat(vllm)
    families = parse_exposition(httpx.get(f"{vllm.url}/metrics").text)
    expected = {
        "vllm:num_requests_running": "gauge", "vllm:num_requests_waiting": "gauge", "vllm:kv_cache_usage_perc": "gauge",
        "vllm:num_preemptions": "counter", "vllm:prompt_tokens": "counter", "vllm:generation_tokens": "counter",
        "vllm:request_success": "counter", "vllm:admission_rejections": "counter",
        "vllm:request_queue_time_seconds": "histogram", "vllm:cache_config_info": "gauge",
    }
    assert {name: families[name].type for name in expected} == expected
    assert families["vllm:num_requests_running"].samples[0][1] == {"model_name": vllm.model, "engine": "0"}
    assert {lbl["finished_reason"] for _, lbl, _ in families["vllm:request_success"].samples} >= {"stop", "length", "abort"}
    buckets = [lbl["le"] for n, lbl, _ in families["vllm:request_queue_time_seconds"].samples if n.endswith("_bucket")]
    assert buckets == [str(b) for b in REQUEST_LATENCY] + ["+Inf"]


def test_runs_as_a_process_controlled_over_http() -> None:
    with VllmEmulatorProcess(max_num_seqs=2, **FAST) as vllm:
        assert chat(vllm).json()["choices"][0]["message"]["content"] == TEXT
        vllm.set(down=True)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{vllm.url}/health")
        assert vllm.stats()["up"] is False
        vllm.set(down=False)
        assert httpx.get(f"{vllm.url}/health").status_code == 200
        stats = vllm.stats()
        assert (stats["completed"], stats["knobs"]["max_num_seqs"]) == (1, 2)
        with pytest.raises(ValueError, match="unknown"):
            vllm.set(nonsense=1)


SAMPLES = Path(__file__).parent / "vllm_real" / "samples"


def _header_names(http_text: str) -> list[str]:
    head = http_text.split("\n\n", 1)[0].splitlines()[1:]
    return [line.split(":", 1)[0].lower() for line in head if line]


def _shape(value: object) -> object:
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="no recorded real-vLLM answers in tests/vllm_real/samples")
def test_matches_what_a_real_vllm_answered() -> None:
    """The answers a real vLLM 0.32 gave (recorded by tests/vllm_real/collect_samples.py), shape for shape."""
    with VllmEmulator(max_num_seqs=1, max_num_queued_reqs=1, max_model_len=4096, block_size=128, output_tokens=100, **FAST) as vllm:
        overloaded = json.loads((SAMPLES / "overloaded_503.json").read_text())
        body = {"model": vllm.model, "messages": messages()}
        with httpx.stream("POST", f"{vllm.base_url}/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}) as stream:
            rejected = httpx.post(f"{vllm.base_url}/chat/completions", json=body)
            lines = [line for line in stream.iter_lines() if line]
            stream_headers = list(stream.headers)
        assert (rejected.status_code, rejected.text) == (overloaded["status"], overloaded["body_raw"])
        assert list(rejected.headers) == [name for name, _ in overloaded["headers"]]

        real_stream = [line for line in (SAMPLES / "chat_stream.txt").read_text().splitlines() if line]
        assert stream_headers == _header_names((SAMPLES / "chat_stream_http.txt").read_text())
        assert lines[-1] == real_stream[-1] == "data: [DONE]"
        ours, theirs = ([json.loads(line.removeprefix("data: ")) for line in s[:-1]] for s in (lines, real_stream))
        for index in (0, 1, -2, -1):  # role, a token, the last token, usage
            assert _shape(ours[index]) == _shape(theirs[index])

        completion = chat(vllm, max_tokens=4)
        assert _shape(completion.json()) == _shape(json.loads((SAMPLES / "chat_completion.json").read_text()))
        assert list(completion.headers) == _header_names((SAMPLES / "chat_completion_http.txt").read_text())
        assert completion.json()["system_fingerprint"].startswith("vllm-0.32.0-")

        missing = httpx.post(f"{vllm.base_url}/chat/completions", json={"model": "no-such-model", "messages": messages()})
        not_found = (SAMPLES / "model_not_found.txt").read_text()
        assert (missing.text, list(missing.headers)) == (not_found.split("\n\n", 1)[1].strip(), _header_names(not_found))
        models = httpx.get(f"{vllm.base_url}/models")
        assert _shape(models.json()) == _shape(json.loads((SAMPLES / "models.json").read_text()))
        health = httpx.get(f"{vllm.url}/health")
        assert (health.status_code, health.content, list(health.headers)) == (200, b"", _header_names((SAMPLES / "health.txt").read_text()))

        def described(text: str) -> dict[str, tuple[str, list[tuple[str, ...]], list[str]]]:
            """Each vllm: family's type, label names and histogram buckets."""
            return {name: (family.type, sorted({tuple(sorted(set(lbl) - {"le"})) for _, lbl, _ in family.samples}),
                           sorted({lbl["le"] for _, lbl, _ in family.samples if "le" in lbl}))
                    for name, family in parse_exposition(text).items() if name.startswith("vllm:")}

        ours_metrics = httpx.get(f"{vllm.url}/metrics").text
        assert described(ours_metrics) == described((SAMPLES / "metrics.txt").read_text())
        real_info = parse_exposition((SAMPLES / "metrics.txt").read_text())["vllm:cache_config_info"].samples[0][1]
        our_info = parse_exposition(ours_metrics)["vllm:cache_config_info"].samples[0][1]
        assert {k: v for k, v in our_info.items() if k != "num_gpu_blocks" and not k.startswith("kv_cache")} == \
               {k: v for k, v in real_info.items() if k != "num_gpu_blocks" and not k.startswith("kv_cache")}
