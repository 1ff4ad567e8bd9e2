"""Build a tiny random-weight Qwen2-VL model folder, offline.

    .venv-vllm/bin/python tests/vllm_real/tiny_model.py OUT_DIR [--force]

The folder holds what vLLM needs to serve it as a real vision-language model:
config.json + generation_config.json, model.safetensors (fixed seed),
tokenizer.json / tokenizer_config.json (a 4096-token byte-level BPE trained here
with the `tokenizers` library, plus Qwen2-VL's special tokens and chat
template), preprocessor_config.json / video_preprocessor_config.json /
processor_config.json. Nothing is downloaded. Runs with the vllm venv's python.

Sizes: text hidden 128 x 2 layers, vision embed 64 x 2 blocks. Images are capped
at MAX_IMAGE_TOKENS merged tokens (28x28 px each after resize), and the context
(max_position_embeddings) fits such an image plus 1024 output tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import sysconfig
from pathlib import Path

SEED = 1234
VOCAB_SIZE = 4096
MAX_IMAGE_TOKENS = 1536  # merged 28x28 patches per image (after smart resize)
MAX_POSITIONS = 4096  # >= MAX_IMAGE_TOKENS + prompt + 1024 output tokens
DONE_FILE = ".tiny-model-complete"
BUILD_VERSION = "1"

# Qwen2-VL's special tokens, in Qwen's order (ids follow the trained vocab).
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL-Instruct's chat template.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    """Deterministic training text: some stdlib sources plus seeded CJK/latin text."""
    texts: list[str] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in sorted(p.name for p in stdlib.glob("*.py"))[:120]:
        try:
            texts.append((stdlib / name).read_text(encoding="utf-8", errors="ignore"))
        except OSError:
            pass
    rng = random.Random(SEED)
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 1200)] + list("的一是不了人我在有他这中大来上个国和也子时道说要")
    punct = list("，。！？：；、")
    for _ in range(4000):
        sent = "".join(rng.choice(cjk) for _ in range(rng.randint(4, 20)))
        texts.append(sent + rng.choice(punct))
    words = ["invoice", "total", "date", "meeting", "chat", "image", "text", "order", "amount", "name"]
    for _ in range(2000):
        texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) + f" {rng.randint(0, 99999)}.")
    return texts


def build_tokenizer(out: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    trained = tok.get_vocab_size()
    if trained != VOCAB_SIZE - len(SPECIAL_TOKENS):
        raise SystemExit(f"BPE training gave {trained} tokens, wanted {VOCAB_SIZE - len(SPECIAL_TOKENS)}")
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.save(str(out / "tokenizer.json"))

    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": MAX_POSITIONS,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
                "special": True,
            }
            for t, i in ids.items()
        },
        "additional_special_tokens": SPECIAL_TOKENS[1:],
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    loaded = AutoTokenizer.from_pretrained(str(out))
    assert len(loaded) == VOCAB_SIZE, len(loaded)
    return ids


def build_processor(out: Path) -> None:
    from transformers import AutoProcessor, AutoTokenizer
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    size = {"shortest_edge": 56 * 56, "longest_edge": MAX_IMAGE_TOKENS * 28 * 28}
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    common = dict(size=size, patch_size=14, temporal_patch_size=2, merge_size=2, image_mean=mean, image_std=std)
    image_processor = Qwen2VLImageProcessor(**common)
    video_processor = Qwen2VLVideoProcessor(**common)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(out))
    # Also the classic per-part files (preprocessor_config.json,
    # video_preprocessor_config.json), and keep the chat template in
    # tokenizer_config.json as Qwen2-VL's own repo has it.
    image_processor.save_pretrained(str(out))
    video_processor.save_pretrained(str(out))
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    for key in ("is_local", "local_files_only"):
        tc.pop(key, None)
    tc["chat_template"] = CHAT_TEMPLATE
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False))
    loaded = AutoProcessor.from_pretrained(str(out))  # loads back
    assert loaded.chat_template == CHAT_TEMPLATE


def build_model(out: Path, ids: dict[str, int]) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration

    head_dim = 128 // 4
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=VOCAB_SIZE,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=MAX_POSITIONS,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=2,
            embed_dim=64,
            hidden_size=128,  # merger output = text hidden size
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    assert sum(config.text_config.rope_parameters["mrope_section"]) * 2 == head_dim
    torch.manual_seed(SEED)
    model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    ).save_pretrained(str(out))


def is_complete(out: os.PathLike | str) -> bool:
    done = Path(out) / DONE_FILE
    return done.is_file() and done.read_text().strip() == BUILD_VERSION


def build(out: os.PathLike | str, force: bool = False) -> Path:
    """Build the model into `out` (atomically: a temp dir renamed at the end)."""
    out = Path(out)
    if is_complete(out) and not force:
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ids = build_tokenizer(tmp)
    build_processor(tmp)
    build_model(tmp, ids)
    (tmp / DONE_FILE).write_text(BUILD_VERSION + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="model directory to create")
    ap.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = ap.parse_args(argv)
    path = build(args.out, force=args.force)
    files = sorted(p.name for p in path.iterdir())
    print(f"tiny Qwen2-VL model at {path}: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
