"""Test images drawn on the fly: text an OCR engine can read back, in any mode and format, and hostile files."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

# Plain words without look-alike letters, so a failed match means a real misread.
WORDS = (
    "harbor", "garden", "window", "market", "yellow", "planet", "silver", "rocket", "winter", "summer",
    "forest", "bridge", "candle", "dragon", "button", "pepper", "rabbit", "sunset", "thunder", "velvet",
    "monkey", "pocket", "saddle", "tunnel", "wander", "zebra", "cherry", "mirror", "beacon", "copper",
    "stream", "meadow", "harvest", "lantern", "pebble", "shadow", "marble", "orange", "parrot", "quartz",
    "ribbon", "spider", "turtle", "walnut", "basket", "cactus", "dinner", "engine", "falcon", "gravel",
)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans where installed, else Pillow's bundled font, which CI images always have."""
    if DEJAVU.exists():
        return ImageFont.truetype(str(DEJAVU), size)
    return ImageFont.load_default(size=size)


def words(seed: int, count: int) -> list[str]:
    return random.Random(seed).sample(WORDS, count)


def text_image(
    lines: list[str],
    *,
    size: int = 40,
    ink: int | tuple[int, ...] = (0, 0, 0),
    paper: int | tuple[int, ...] = (255, 255, 255),
    mode: str = "RGB",
    margin: int = 30,
) -> Image.Image:
    face = font(size)
    spacing = int(size * 1.6)
    width = max(int(face.getlength(line)) for line in lines) + 2 * margin
    height = spacing * len(lines) + 2 * margin
    image = Image.new(mode, (width, height), paper)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((margin, margin + index * spacing), line, font=face, fill=ink)
    return image


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=format, **options)
    return out.getvalue()


def chat_capture(messages: dict[int, str], *, width: int = 1080, height: int = 9000, size: int = 40) -> Image.Image:
    """A scrolled chat: each message in a bubble whose text is vertically centred on its key, alternating sides."""
    image = Image.new("RGB", (width, height), (237, 237, 237))
    draw = ImageDraw.Draw(image)
    face = font(size)
    for index, (centre, text) in enumerate(sorted(messages.items())):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
        text_w, text_h = right - left, bottom - top
        x = 60 if index % 2 == 0 else width - 60 - text_w
        y = centre - text_h // 2 - top
        bubble = (255, 255, 255) if index % 2 == 0 else (149, 236, 105)
        draw.rounded_rectangle((x - 24, y + top - 16, x + text_w + 24, y + bottom + 16), radius=12, fill=bubble)
        draw.text((x, y), text, font=face, fill=(20, 20, 20))
    return image


def banner(sentence: str, *, height: int = 400, size: int = 72, margin: int = 40) -> Image.Image:
    face = font(size)
    width = int(face.getlength(sentence)) + 2 * margin
    image = Image.new("RGB", (width, height), (250, 246, 230))
    ImageDraw.Draw(image).text((margin, height // 2), sentence, font=face, fill=(30, 30, 90), anchor="lm")
    return image


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of `width`×`height` black pixels: a few hundred KB that decode to gigapixels."""
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`×`height` but whose pixel data is one tiny image's."""
    data = encode(Image.new("L", (8, 8), 255), "PNG")
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return data[:8] + _chunk(b"IHDR", header) + data[8 + 25 :]
