"""A vLLM (v1 engine, 0.32) logits processor that keeps a random model from repeating.

A random-weight model decoded greedily falls into a loop within a few tokens,
and a client that stops on repetition would then cut every answer short. This
processor bans, for each request, every token it generated in its last WINDOW
output tokens (so no token recurs within WINDOW), and also the vision
placeholder tokens (<|image_pad|>, <|video_pad|>, <|vision_start|>,
<|vision_end|>) that a real model never emits. End-of-sequence is never banned.

Load it with ``vllm serve ... --logits-processors norepeat:NoRepeatLogitsProcessor``
(serve.py's ``--no-repeat`` does this and puts this folder on PYTHONPATH).

Knobs:
- env ``OCRHUB_NOREPEAT_WINDOW`` (default 512): the window for every request;
- per request, OpenAI body ``"vllm_xargs": {"no_repeat_window": N}``
  (``N=0`` turns the processor off for that request).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

if TYPE_CHECKING:
    from vllm.config import VllmConfig

DEFAULT_WINDOW = int(os.environ.get("OCRHUB_NOREPEAT_WINDOW", "512"))
XARG = "no_repeat_window"
_PLACEHOLDER_ATTRS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def _window_of(params: SamplingParams) -> int:
    extra = params.extra_args or {}
    return int(extra.get(XARG, DEFAULT_WINDOW))


class NoRepeatLogitsProcessor(LogitsProcessor):
    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        extra = sampling_params.extra_args or {}
        if XARG in extra:
            value = extra[XARG]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{XARG} must be a non-negative integer, got {value!r}")

    def __init__(self, vllm_config: "VllmConfig", device: torch.device, is_pin_memory: bool) -> None:
        self.device = device
        vocab = vllm_config.model_config.get_vocab_size()
        # Never ban so much that nothing is left to sample.
        self.max_window = max(1, vocab // 2)
        hf = vllm_config.model_config.hf_config
        self.always_banned = sorted(
            {int(getattr(hf, a)) for a in _PLACEHOLDER_ATTRS if isinstance(getattr(hf, a, None), int)}
        )
        # batch index -> (window, reference to the request's live output token list)
        self.reqs: dict[int, tuple[int, list[int]]] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it changes what greedy decoding picks

    @staticmethod
    def _new_state(params: SamplingParams, _prompt: list[int] | None, output: list[int]):
        window = _window_of(params)
        return (window, output) if window > 0 else None

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.reqs, batch_update, self._new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.reqs:
            return logits
        rows: list[int] = []
        cols: list[int] = []
        num_rows = logits.shape[0]
        for row, (window, output) in self.reqs.items():
            if row >= num_rows:
                continue
            recent = set(output[-min(window, self.max_window):]) if output else set()
            recent.update(self.always_banned)
            rows.extend([row] * len(recent))
            cols.extend(recent)
        if rows:
            r = torch.tensor(rows, dtype=torch.long, device=logits.device)
            c = torch.tensor(cols, dtype=torch.long, device=logits.device)
            logits[r, c] = float("-inf")
        return logits
