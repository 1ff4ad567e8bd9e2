"""HunyuanOCR on vLLM: prompts, page preparation, the streaming client, metrics and the limit controller.

The engine that ties them together is `ocr_core.engines.vllm`; the permits it takes live beside
every other cross-worker limit, in `ocr_core.limits.leases`.
"""
