"""What a vLLM server says about its load, read from its Prometheus `/metrics` text."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Snapshot:
    """One scrape. Counters are running totals; the controller looks at their change between scrapes."""

    at: float  # monotonic seconds
    running: float
    waiting: float
    kv_usage: float  # 0–1
    preemptions: float
    queue_time_sum: float
    queue_time_count: float
    rejections: float
    inference_time_sum: float
    inference_time_count: float
    kv_tokens: int  # KV cache capacity in tokens (num_gpu_blocks × block_size), 0 when not published


def parse(text: str, *, model: str = "", at: float | None = None) -> Snapshot:
    """Sum each metric over the engines of `model` (every model when empty)."""
    totals: dict[str, float] = {}
    kv_tokens = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if not match:
            continue
        name, raw_labels, raw_value = match.groups()
        labels = dict(_LABEL.findall(raw_labels or ""))
        if model and labels.get("model_name", model) != model:
            continue
        try:
            value = float(raw_value)
        except ValueError:
            continue
        if math.isnan(value):
            continue
        if name == "vllm:cache_config_info":
            blocks, size = labels.get("num_gpu_blocks", ""), labels.get("block_size", "")
            if blocks.isdigit() and size.isdigit():
                kv_tokens += int(blocks) * int(size)
            continue
        totals[name] = totals.get(name, 0.0) + value
    return Snapshot(
        at=time.monotonic() if at is None else at,
        running=totals.get("vllm:num_requests_running", 0.0),
        waiting=totals.get("vllm:num_requests_waiting", 0.0),
        # Older vLLM names the fraction gpu_cache_usage_perc.
        kv_usage=totals.get("vllm:kv_cache_usage_perc", totals.get("vllm:gpu_cache_usage_perc", 0.0)),
        preemptions=totals.get("vllm:num_preemptions_total", 0.0),
        queue_time_sum=totals.get("vllm:request_queue_time_seconds_sum", 0.0),
        queue_time_count=totals.get("vllm:request_queue_time_seconds_count", 0.0),
        rejections=totals.get("vllm:admission_rejections_total", 0.0),
        inference_time_sum=totals.get("vllm:request_inference_time_seconds_sum", 0.0),
        inference_time_count=totals.get("vllm:request_inference_time_seconds_count", 0.0),
        kv_tokens=kv_tokens,
    )
