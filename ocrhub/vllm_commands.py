"""vLLM as the command line shows it: the `vllm serve` line that fits the settings in force
(`ocrhub vllm-command`), and the shared limit's state per server as text (`ocrhub vllm-status`)."""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlsplit

from ocrhub.settings import Settings

DEFAULT_PORT = 8000
# With 'auto' ocrhub finds the limit below vLLM's own cap; 16 is what held on a 24 GB GPU.
AUTO_MAX_NUM_SEQS = 16


def serve_line(settings: Settings, port: int | None = None) -> str:
    """A shell line starting vLLM with HunyuanOCR's recommended flags; `port` defaults to the first OCRHUB_VLLM_URLS port."""
    if port is None:
        port = (urlsplit(settings.vllm_urls[0]).port if settings.vllm_urls else None) or DEFAULT_PORT
    seqs = AUTO_MAX_NUM_SEQS if settings.vllm_concurrency == "auto" else int(settings.vllm_concurrency)
    words = [
        "vllm", "serve", settings.vllm_model, "--served-model-name", settings.vllm_model,
        "--host", "0.0.0.0", "--port", str(port),
        "--no-enable-prefix-caching", "--mm-processor-cache-gb", "0",
        "--max-num-seqs", str(seqs), "--gpu-memory-utilization", "0.9",
        "--max-model-len", str(max(8192, settings.vllm_max_tokens + 4096)),
        "--trust-remote-code",
    ]
    line = " ".join(shlex.quote(w) for w in words)
    if settings.vllm_api_key.get_secret_value():
        line += ' --api-key "$OCRHUB_VLLM_API_KEY"'  # the secret stays in the environment, not in shell history
    return line


def status_lines(settings: Settings, rows: list[dict[str, Any]]) -> list[str]:
    """`ocr_core.vllm.servers.report` rows as lines: limit, in flight, circuit, last change and last metrics per server."""
    lines = [f"concurrency: {settings.vllm_concurrency} (bounds {settings.vllm_min_concurrency}..{settings.vllm_max_concurrency})"]
    for row in rows:
        m = row["metrics"]
        circuit = row["state"] + (f" for {row['open_for_s']:.0f} s" if row["state"] == "open" else "")
        lines.append(f"{row['url']}: limit {row['limit']} (target {row['target']}), in flight {row['in_flight']}, circuit {circuit}")
        lines.append(f"    last change: {row['reason']}")
        if m:
            lines.append(
                f"    vLLM: healthy={m.get('healthy')} running={m.get('running', '?')} waiting={m.get('waiting', '?')} "
                f"kv={m.get('kv_usage', 0):.0%} preemptions={m.get('preemptions', '?')} {m.get('error', '')}"
            )
    return lines
