"""vLLM 0.32's /metrics: the families its PrometheusStatLogger registers (vllm/v1/metrics/loggers.py, perf.py,
buckets.py), written the way prometheus_client 0.26 exposes them: registration order, labels sorted, counters as
`<name>_total` plus a `<name>_created` gauge, histograms as `_bucket`/`_count`/`_sum` plus `_created`.

For an idle server this text is line for line what vLLM's own logger produces, `_created` times aside; the
python_*/process_*/http_* families a real server adds are left out.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.emulators.vllm_engine import Request

REQUEST_LATENCY = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TIME_TO_FIRST_TOKEN = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
INTER_TOKEN_LATENCY = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
ITERATION_TOKENS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
REQUEST_PARAMS_N = (1, 2, 5, 10, 20)
REQUEST_NUM_PREEMPTIONS = (1, 2, 3, 4, 5, 10, 20)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
ADMISSION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens")
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
CACHE_HIT_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")


def request_token_buckets(max_model_len: int) -> tuple[int, ...]:
    buckets, exponent = [], 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_model_len:
                return tuple(buckets)
            buckets.append(value)
        exponent += 1


@dataclass(frozen=True)
class Family:
    name: str
    kind: str  # gauge | counter | histogram
    help: str
    label: str = ""  # one extra label after model_name and engine
    values: tuple[str, ...] = ()
    buckets: str = ""  # a key of Metrics.buckets
    engine: bool = True


# In vLLM 0.32's registration order; histograms name their bucket family.
FAMILIES = (
    Family("vllm:estimated_flops_per_gpu", "counter", "Estimated number of floating point operations per GPU (for Model Flops Utilization calculations)."),
    Family("vllm:estimated_read_bytes_per_gpu", "counter", "Estimated number of bytes read from memory per GPU (for Model Flops Utilization calculations)."),
    Family("vllm:estimated_write_bytes_per_gpu", "counter", "Estimated number of bytes written to memory per GPU (for Model Flops Utilization calculations)."),
    Family("vllm:num_requests_running", "gauge", "Number of requests in model execution batches."),
    Family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed."),
    Family("vllm:num_requests_waiting_by_reason", "gauge", "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.", "reason", ("capacity", "deferred")),
    Family("vllm:engine_sleep_state", "gauge", "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.", "sleep_state", SLEEP_STATES),
    Family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage."),
    Family("vllm:prefix_cache_queries", "counter", "Prefix cache queries, in terms of number of queried tokens."),
    Family("vllm:prefix_cache_hits", "counter", "Prefix cache hits, in terms of number of cached tokens."),
    Family("vllm:external_prefix_cache_queries", "counter", "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens."),
    Family("vllm:external_prefix_cache_hits", "counter", "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens."),
    Family("vllm:mm_cache_queries", "counter", "Multi-modal cache queries, in terms of number of queried items."),
    Family("vllm:mm_cache_hits", "counter", "Multi-modal cache hits, in terms of number of cached items."),
    Family("vllm:num_preemptions", "counter", "Cumulative number of preemption from the engine."),
    Family("vllm:prompt_tokens", "counter", "Number of prefill tokens processed."),
    Family("vllm:prompt_tokens_by_source", "counter", "Number of prompt tokens by source.", "source", PROMPT_SOURCES),
    Family("vllm:prompt_tokens_cached", "counter", "Number of cached prompt tokens (local + external)."),
    Family("vllm:prompt_tokens_cached_by_source", "counter", "Prefix-cache hit tokens by the cache tier that supplied them: device (local HBM), host (offloaded to DRAM), disk, p2p (transferred from another vLLM instance) or external_unspecified. Counted at admission; sums to vllm:prefix_cache_hits + vllm:external_prefix_cache_hits.", "source", CACHE_HIT_SOURCES),
    Family("vllm:generation_tokens", "counter", "Number of generation tokens processed."),
    Family("vllm:request_success", "counter", "Count of successfully processed requests.", "finished_reason", FINISH_REASONS),
    Family("vllm:admission_rejections", "counter", "Number of admission attempts rejected by a queue limit, by reason.", "reason", ADMISSION_REASONS, engine=False),
    Family("vllm:request_prompt_tokens", "histogram", "Number of prefill tokens processed.", buckets="request_tokens"),
    Family("vllm:request_generation_tokens", "histogram", "Number of generation tokens processed.", buckets="request_tokens"),
    Family("vllm:iteration_tokens_total", "histogram", "Histogram of number of tokens per engine_step.", buckets="iteration_tokens"),
    Family("vllm:request_max_num_generation_tokens", "histogram", "Histogram of maximum number of requested generation tokens.", buckets="request_tokens"),
    Family("vllm:request_params_n", "histogram", "Histogram of the n request parameter.", buckets="request_params_n"),
    Family("vllm:request_params_max_tokens", "histogram", "Histogram of the max_tokens request parameter.", buckets="request_tokens"),
    Family("vllm:time_to_first_token_seconds", "histogram", "Histogram of time to first token in seconds.", buckets="time_to_first_token"),
    Family("vllm:inter_token_latency_seconds", "histogram", "Histogram of inter-token latency in seconds.", buckets="inter_token_latency"),
    Family("vllm:request_time_per_output_token_seconds", "histogram", "Histogram of time_per_output_token_seconds per request.", buckets="inter_token_latency"),
    Family("vllm:e2e_request_latency_seconds", "histogram", "Histogram of e2e request latency in seconds.", buckets="request_latency"),
    Family("vllm:request_queue_time_seconds", "histogram", "Histogram of time spent in WAITING phase for request.", buckets="request_latency"),
    Family("vllm:request_inference_time_seconds", "histogram", "Histogram of time spent in RUNNING phase for request.", buckets="request_latency"),
    Family("vllm:request_prefill_time_seconds", "histogram", "Histogram of time spent in PREFILL phase for request.", buckets="request_latency"),
    Family("vllm:request_decode_time_seconds", "histogram", "Histogram of time spent in DECODE phase for request.", buckets="request_latency"),
    Family("vllm:request_num_preemptions", "histogram", "Histogram of the number of times a request was preempted.", buckets="request_num_preemptions"),
    Family("vllm:request_prefill_kv_computed_tokens", "histogram", "Histogram of new KV tokens computed during prefill (excluding cached tokens).", buckets="request_tokens"),
)
KV_BYTES_PER_TOKEN = 512  # the tiny test model's; only shown in vllm:cache_config_info


def cache_config(block_size: int, num_gpu_blocks: int, max_model_len: int) -> dict[str, str]:
    tokens = block_size * num_gpu_blocks
    return CACHE_CONFIG | {
        "block_size": str(block_size), "effective_attention_block_size": str(block_size),
        "num_gpu_blocks": str(num_gpu_blocks), "kv_cache_size_tokens": str(tokens),
        "kv_cache_memory_bytes": str(tokens * KV_BYTES_PER_TOKEN), "kv_cache_max_concurrency": str(tokens / max_model_len),
    }


BY_NAME = {family.name: family for family in FAMILIES}
CACHE_CONFIG_INFO = Family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig")
# CacheConfig.metrics_info() of a vLLM 0.32 server at its defaults; the sizes are the emulator's (see cache_config).
CACHE_CONFIG = {
    "_block_size_resolved": "True", "block_size": "128", "cache_dtype": "auto", "cache_hit_alignment_tokens": "None",
    "effective_attention_block_size": "128", "enable_mamba_shared_prefix_checkpoint": "False",
    "enable_prefix_caching": "True", "gpu_memory_utilization": "0.92", "hash_block_size": "None",
    "is_attention_free": "False", "kv_cache_dtype_skip_layers": "[]", "kv_cache_layout": "None",
    "kv_cache_max_concurrency": "None", "kv_cache_memory_bytes": "None", "kv_cache_size_tokens": "None",
    "kv_offloading_backend": "native", "kv_offloading_size": "None", "kv_sharing_fast_prefill": "False",
    "mamba_block_size": "None", "mamba_cache_dtype": "auto", "mamba_cache_mode": "none",
    "mamba_page_size_padded": "None", "mamba_ssm_cache_dtype": "auto", "num_cpu_blocks": "None",
    "num_gpu_blocks": "64", "num_gpu_blocks_override": "None", "prefix_cache_retention_interval": "0",
    "prefix_caching_hash_algo": "sha256", "prefix_match_unit": "None", "replayssm_buffer_len": "16",
    "skip_page_size_padded": "None", "sliding_window": "None", "swa_bounded_replay": "True",
    "use_kda_recoverssm": "False", "use_replayssm": "False", "user_specified_block_size": "False",
}


def go_float(value: float) -> str:
    """prometheus_client's floatToGoString."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}" if inner else ""


class Metrics:
    """The counters and histograms; gauges are read from the engine when rendered."""

    def __init__(self, model: str, max_model_len: int) -> None:
        self.model = model
        self.buckets: dict[str, tuple[float, ...]] = {
            "request_latency": REQUEST_LATENCY, "time_to_first_token": TIME_TO_FIRST_TOKEN,
            "inter_token_latency": INTER_TOKEN_LATENCY, "iteration_tokens": ITERATION_TOKENS,
            "request_params_n": REQUEST_PARAMS_N, "request_num_preemptions": REQUEST_NUM_PREEMPTIONS,
            "request_tokens": request_token_buckets(max_model_len),
        }
        self.reset()

    def reset(self) -> None:
        self.created = time.time()
        self.counters: dict[tuple[str, str], float] = defaultdict(float)
        self.histograms: dict[str, tuple[list[int], list[float]]] = {}

    def count(self, name: str, amount: float = 1, label: str = "") -> None:
        self.counters[(name, label)] += amount

    def observe(self, name: str, value: float) -> None:
        bounds = self.buckets[BY_NAME[name].buckets]
        counts, total = self.histograms.setdefault(name, ([0] * (len(bounds) + 1), [0.0]))
        counts[next((i for i, b in enumerate(bounds) if value <= b), len(bounds))] += 1
        total[0] += value

    def started(self, request: Request) -> None:
        """At the first token, as vLLM's IterationStats counts prompt tokens and time to first token."""
        self.count("vllm:prompt_tokens", request.prompt_tokens)
        self.count("vllm:prompt_tokens_by_source", request.prompt_tokens, "local_compute")
        self.count("vllm:prefix_cache_queries", request.prompt_tokens)
        assert request.first_token is not None
        self.observe("vllm:time_to_first_token_seconds", request.first_token - request.arrival)

    def finished(self, request: Request, now: float) -> None:
        self.count("vllm:request_success", 1, request.finished or "stop")
        first_scheduled = request.first_scheduled or now
        first_token = request.first_token or now
        decode = now - first_token
        self.observe("vllm:e2e_request_latency_seconds", now - request.arrival)
        self.observe("vllm:request_queue_time_seconds", first_scheduled - request.arrival)
        self.observe("vllm:request_inference_time_seconds", now - first_scheduled)
        self.observe("vllm:request_prefill_time_seconds", first_token - first_scheduled)
        self.observe("vllm:request_decode_time_seconds", decode)
        self.observe("vllm:request_num_preemptions", request.preemptions)
        self.observe("vllm:request_prefill_kv_computed_tokens", request.prompt_tokens)
        self.observe("vllm:request_prompt_tokens", request.prompt_tokens)
        self.observe("vllm:request_generation_tokens", request.generated)
        self.observe("vllm:request_time_per_output_token_seconds", decode / (request.generated - 1) if request.generated > 1 else 0.0)
        self.observe("vllm:request_max_num_generation_tokens", request.max_tokens)
        self.observe("vllm:request_params_n", 1)
        if request.max_tokens_param:
            self.observe("vllm:request_params_max_tokens", request.max_tokens_param)

    def render(self, gauges: dict[str, Any], cache_info: dict[str, str]) -> str:
        """The exposition text; `gauges` maps gauge names to a value or to {label value: value}."""
        out: list[str] = []
        base = {"model_name": self.model, "engine": "0"}
        created = go_float(self.created)
        for family in FAMILIES:
            labels = base if family.engine else {"model_name": self.model}
            series = [(labels | {family.label: v} if family.label else labels, v) for v in (family.values or ("",))]
            if family.kind == "gauge":
                value = gauges.get(family.name, 0)
                out += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} gauge"]
                out += [f"{family.name}{_labels(lbl)} {go_float(value.get(v, 0) if isinstance(value, dict) else value)}" for lbl, v in series]
            elif family.kind == "counter":
                name = f"{family.name}_total"
                out += [f"# HELP {name} {family.help}", f"# TYPE {name} counter"]
                out += [f"{name}{_labels(lbl)} {go_float(self.counters.get((family.name, v), 0.0))}" for lbl, v in series]
                out += [f"# HELP {family.name}_created {family.help}", f"# TYPE {family.name}_created gauge"]
                out += [f"{family.name}_created{_labels(lbl)} {created}" for lbl, _ in series]
            else:
                bounds = self.buckets[family.buckets]
                counts, total = self.histograms.get(family.name, ([0] * (len(bounds) + 1), [0.0]))
                out += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} histogram"]
                cumulative = 0
                for bound, n in zip((*bounds, math.inf), counts):
                    cumulative += n
                    out.append(f"{family.name}_bucket{_labels(labels | {'le': go_float(bound)})} {go_float(cumulative)}")
                out.append(f"{family.name}_count{_labels(labels)} {go_float(cumulative)}")
                out.append(f"{family.name}_sum{_labels(labels)} {go_float(total[0])}")
                out += [f"# HELP {family.name}_created {family.help}", f"# TYPE {family.name}_created gauge"]
                out.append(f"{family.name}_created{_labels(labels)} {created}")
        info = CACHE_CONFIG_INFO
        out += [f"# HELP {info.name} {info.help}", f"# TYPE {info.name} gauge", f"{info.name}{_labels(cache_info | {'engine': '0'})} 1.0"]
        return "\n".join(out) + "\n"


@dataclass
class ParsedFamily:
    name: str  # counters without their _total, as prometheus_client's parser names them
    type: str
    samples: list[tuple[str, dict[str, str], float]]


def parse_exposition(text: str) -> dict[str, ParsedFamily]:
    """Read a Prometheus text exposition: prometheus_client's parser when installed, a small one otherwise."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return _parse(text)
    return {f.name: ParsedFamily(f.name, f.type, [(s.name, dict(s.labels), s.value) for s in f.samples])
            for f in text_string_to_metric_families(text)}


def _parse(text: str) -> dict[str, ParsedFamily]:
    import re

    families: dict[str, ParsedFamily] = {}
    by_sample: dict[str, ParsedFamily] = {}
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
            family = families.setdefault(base, ParsedFamily(base, kind, []))
            suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}.get(kind, ("",))
            by_sample.update({base + suffix: family for suffix in suffixes})
        elif line and not line.startswith("#"):
            match = sample.match(line)
            if match is None:
                raise ValueError(f"not a Prometheus sample line: {line!r}")
            name, labels, value = match.groups()
            family = by_sample.get(name) or families.setdefault(name, ParsedFamily(name, "unknown", []))
            parsed = {k: re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v) for k, v in label.findall(labels or "")}
            family.samples.append((name, parsed, float(value)))
    return families
