"""What the emulated vision-language OCR model reads and writes.

Prompt tokens: text is about 4 characters a token; each message costs 5 template tokens and the
assistant turn 3 more; an image costs Qwen2-VL's count, (h/28)*(w/28) after its `smart_resize`
(sides rounded to multiples of 28, the area kept within 56*56 .. 28*28*16384 pixels), plus its
two vision start/end tokens.

The answer: the text an image carries, then EOS: its PNG chunk named "ocrhub-text" (PIL PngInfo), or else
the text written into its first pixel row (vllm_pixels, which survives re-encoding); otherwise `output_tokens` (64 by default) deterministic filler words. A forced
`output_tokens` fixes the length either way. `repeat` answers one short phrase again and again until
max_tokens. Tokens are about 4 characters, or one CJK character.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import unicodedata
from dataclasses import dataclass
from itertools import cycle, islice
from typing import Any

from tests.emulators.vllm_pixels import pixel_text_image, read_pixel_text

__all__ = ["BadRequest", "Prompt", "data_url", "image_tokens", "pixel_text_image", "plan_output", "read_prompt",
           "smart_resize", "split_tokens", "text_png"]

from tests.emulators.vllm_pixels import pixel_text_image, read_pixel_text  # noqa: F401 - pixel_text_image: for tests

TEXT_CHUNK = "ocrhub-text"
PATCH = 28
MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 16384
DEFAULT_OUTPUT_TOKENS = 64
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua "
REPEAT_PHRASE = "重复 the same line. "


class BadRequest(Exception):
    """A request vLLM would refuse with 400; `param` as vLLM names it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Prompt:
    tokens: int
    image_text: str | None
    images: int


def smart_resize(height: int, width: int) -> tuple[int, int]:
    """Qwen2-VL's resize: both sides multiples of 28, the area within MIN_PIXELS..MAX_PIXELS."""
    h_bar = max(PATCH, round(height / PATCH) * PATCH)
    w_bar = max(PATCH, round(width / PATCH) * PATCH)
    if h_bar * w_bar > MAX_PIXELS:
        beta = math.sqrt(height * width / MAX_PIXELS)
        h_bar = max(PATCH, math.floor(height / beta / PATCH) * PATCH)
        w_bar = max(PATCH, math.floor(width / beta / PATCH) * PATCH)
    elif h_bar * w_bar < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (height * width))
        h_bar = math.ceil(height * beta / PATCH) * PATCH
        w_bar = math.ceil(width * beta / PATCH) * PATCH
    return h_bar, w_bar


def image_tokens(width: int, height: int) -> int:
    h_bar, w_bar = smart_resize(height, width)
    return (h_bar // PATCH) * (w_bar // PATCH)


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def split_tokens(text: str) -> list[str]:
    """Cut text into token-sized pieces: one CJK character, or up to 4 other characters."""
    pieces: list[str] = []
    run = ""
    for ch in text:
        if unicodedata.east_asian_width(ch) in "WF":
            if run:
                pieces.append(run)
                run = ""
            pieces.append(ch)
        else:
            run += ch
            if len(run) == 4:
                pieces.append(run)
                run = ""
    if run:
        pieces.append(run)
    return pieces


def _image(url: str) -> tuple[int, str | None]:
    from PIL import Image, UnidentifiedImageError

    head, sep, data = url.partition(",")
    if not (url.startswith("data:") and sep and head.endswith(";base64")):
        raise BadRequest(f"The emulator reads only base64 data: URLs, got {url[:40]!r}")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    except (binascii.Error, UnidentifiedImageError, ValueError) as exc:
        raise BadRequest(f"Failed to load image: {exc}") from exc
    text = image.info.get(TEXT_CHUNK)
    if text is None:
        text = read_pixel_text(image)
    return image_tokens(*image.size), (str(text) if text is not None else None)


def read_prompt(messages: Any) -> Prompt:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", "messages")
    tokens, images, texts = 3, 0, []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise BadRequest("each message needs a role", "messages")
        tokens += 5
        content = message.get("content") or ""
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise BadRequest("message content must be a string or a list of parts", "messages")
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                tokens += text_tokens(str(part.get("text", "")))
            elif kind == "image_url":
                url = part.get("image_url")
                count, text = _image(url.get("url", "") if isinstance(url, dict) else str(url or ""))
                tokens += count + 2
                images += 1
                if text is not None:
                    texts.append(text)
            else:
                raise BadRequest(f"Unsupported content part type: {kind!r}", "messages")
    return Prompt(tokens, "\n".join(texts) if texts else None, images)


def plan_output(prompt: Prompt, max_tokens: int, output_tokens: int | None, repeat: bool) -> tuple[list[str], str]:
    """The answer's tokens and the finish reason once they are all out ("length" when max_tokens cut it)."""
    if repeat:
        return list(islice(cycle(split_tokens(REPEAT_PHRASE)), max_tokens)), "length"
    if prompt.image_text is not None:
        tokens = split_tokens(prompt.image_text) or [""]
    else:
        tokens = split_tokens(FILLER)
        output_tokens = DEFAULT_OUTPUT_TOKENS if output_tokens is None else output_tokens
    if output_tokens is not None:
        tokens = list(islice(cycle(tokens), max(1, output_tokens)))
    if len(tokens) > max_tokens:
        return tokens[:max_tokens], "length"
    return tokens, "stop"


def text_png(text: str | None, size: tuple[int, int] = (280, 140)) -> bytes:
    """A blank PNG of `size` whose "ocrhub-text" chunk is what the emulated model will answer."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_itxt(TEXT_CHUNK, text)
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def data_url(image: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(image).decode()}"
