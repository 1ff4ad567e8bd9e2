"""The `vllm serve` line `ocrhub vllm-command` prints, and `ocrhub vllm-status` as text."""

from __future__ import annotations

import shlex

from ocrhub.vllm_commands import serve_line, status_lines


def test_the_serve_line_follows_the_settings_and_keeps_the_api_key_out(set_env):
    settings = set_env(vllm_urls="http://gpu:9001", vllm_concurrency="5", vllm_model="org/my model",
                       vllm_max_tokens="6000", vllm_api_key="vllm-secret-key")
    line = serve_line(settings)
    words = shlex.split(line)
    assert words[:3] == ["vllm", "serve", "org/my model"]
    assert words[words.index("--port") + 1] == "9001"
    assert words[words.index("--max-num-seqs") + 1] == "5"
    assert words[words.index("--max-model-len") + 1] == "10096"
    assert "vllm-secret-key" not in line and line.endswith('--api-key "$OCRHUB_VLLM_API_KEY"')
    assert shlex.split(serve_line(settings, 7000))[words.index("--port") + 1] == "7000"


def test_the_serve_line_without_servers_or_a_fixed_limit(set_env):
    words = shlex.split(serve_line(set_env(vllm_concurrency="auto")))
    assert words[words.index("--port") + 1] == "8000"
    assert words[words.index("--max-num-seqs") + 1] == "16"
    assert "--api-key" not in words


def test_status_lines_show_each_servers_limit_circuit_and_metrics(set_env):
    settings = set_env(vllm_concurrency="auto", vllm_min_concurrency="2", vllm_max_concurrency="32")
    rows = [
        {"url": "http://a:8000", "limit": 8, "target": 10, "in_flight": 3, "state": "closed", "open_for_s": 0.0,
         "reason": "kv cache at 40%", "metrics": {"healthy": True, "running": 3, "waiting": 0, "kv_usage": 0.4, "preemptions": 0}},
        {"url": "http://b:8000", "limit": 1, "target": 1, "in_flight": 0, "state": "open", "open_for_s": 12.4,
         "reason": "connection refused", "metrics": {}},
    ]
    assert [line.rstrip() for line in status_lines(settings, rows)] == [
        "concurrency: auto (bounds 2..32)",
        "http://a:8000: limit 8 (target 10), in flight 3, circuit closed",
        "    last change: kv cache at 40%",
        "    vLLM: healthy=True running=3 waiting=0 kv=40% preemptions=0",
        "http://b:8000: limit 1 (target 1), in flight 0, circuit open for 12 s",
        "    last change: connection refused",
    ]
