"""Text written into an image's first pixel row, for the vLLM emulator to "read".

A PNG text chunk does not survive an engine that re-encodes its pages; the first row of pixels does,
as long as nothing resizes the image (pages under the engine's longest side are sent as they are).
Layout: MAGIC, then the UTF-8 length (two bytes), then the bytes, three to a pixel, left to right.
"""

from __future__ import annotations

from PIL import Image

MAGIC = b"OCRT"


def pixel_text_image(text: str, size: tuple[int, int] = (640, 200)) -> Image.Image:
    payload = MAGIC + len(text.encode()).to_bytes(2, "big") + text.encode()
    payload += b"\xff" * (-len(payload) % 3)
    width = max(size[0], len(payload) // 3 + 1)
    image = Image.new("RGB", (width, size[1]), "white")
    for index in range(0, len(payload), 3):
        image.putpixel((index // 3, 0), tuple(payload[index:index + 3]))
    return image


def read_pixel_text(image: Image.Image) -> str | None:
    if image.width < 3 or image.mode not in {"RGB", "RGBA"}:
        return None
    row = image.convert("RGB").crop((0, 0, image.width, 1)).tobytes()
    if not row.startswith(MAGIC):
        return None
    length = int.from_bytes(row[4:6], "big")
    data = row[6:6 + length]
    return data.decode(errors="replace") if len(data) == length else None
