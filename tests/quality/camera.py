"""A phone camera pointed at a flat page: perspective, tilt, uneven light, blur, sensor noise, JPEG,
and the orientation the picture ends up in (turned pixels, an EXIF tag that may lie)."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["Camera", "jpeg", "photograph", "png", "snapshot", "turned"]

ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Camera:
    """How one photo is taken; every damage is mild enough that a person reads the page at a glance."""

    size: tuple[int, int] = (1800, 2400)  # the photo's pixels, as a chat app passes them on
    fill: float = 0.86  # share of the frame the page spans
    tilt: float = 0.0  # degrees the page is turned in the frame
    keystone: float = 0.04  # corners pushed by up to this share of the page: the phone is not square on
    blur: float = 1.0  # Gaussian radius in pixels: focus and hand shake
    noise: float = 4.0  # standard deviation of sensor noise, in 8-bit levels
    shade: float = 0.18  # how much darker the far corner is than the lit one
    background: tuple[int, int, int] = (92, 80, 70)  # the desk
    quality: int = 75  # JPEG quality the phone or the chat app saves it with


def photograph(page: Image.Image, camera: Camera, rng: random.Random) -> Image.Image:
    """`page` as the camera sees it, upright; encode it with `jpeg`."""
    width, height = camera.size
    scale = min(camera.fill * width / page.width, camera.fill * height / page.height)
    page = page.convert("RGB").resize((round(page.width * scale), round(page.height * scale)), Image.Resampling.LANCZOS)
    corners = _landing(page.size, camera, rng)
    warped = page.convert("RGBA").transform(
        camera.size,
        Image.Transform.PERSPECTIVE,
        _perspective(corners, page.size),
        Image.Resampling.BICUBIC,
        fillcolor=(0, 0, 0, 0),
    )
    photo = Image.new("RGB", camera.size, camera.background)
    photo.paste(warped, (0, 0), warped)
    pixels = np.asarray(photo, dtype=np.float32) * _light(camera, rng)[:, :, None]
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(camera.blur))
    noise = np.random.default_rng(rng.randrange(2**32)).standard_normal((height, width, 1), dtype=np.float32)
    return Image.fromarray(np.clip(np.asarray(photo, dtype=np.float32) + noise * camera.noise, 0, 255).astype(np.uint8))


def snapshot(page: Image.Image, camera: Camera, rng: random.Random, *, clockwise: int = 0, orientation: int | None = None) -> bytes:
    """The JPEG a phone posts of `page`: photographed, turned `clockwise`, tagged with `orientation` if given."""
    return jpeg(turned(photograph(page, camera, rng), clockwise), camera.quality, orientation=orientation)


def turned(image: Image.Image, clockwise: int) -> Image.Image:
    """`image` turned by `clockwise` degrees (a multiple of 90), as a phone held sideways or upside down saves it."""
    if clockwise % 90:
        raise ValueError(f"a photo turns by quarter turns, not {clockwise}°")
    return image.rotate(-clockwise, expand=True) if clockwise % 360 else image


def jpeg(image: Image.Image, quality: int, *, orientation: int | None = None) -> bytes:
    """JPEG bytes; without `orientation` no EXIF at all, as chat apps strip it."""
    out = io.BytesIO()
    options: dict[str, object] = {"quality": quality}
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        options["exif"] = exif.tobytes()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _landing(size: tuple[int, int], camera: Camera, rng: random.Random) -> list[tuple[float, float]]:
    """Where the page's corners (clockwise from top-left) land in the photo."""
    width, height = size
    centre_x, centre_y = camera.size[0] / 2, camera.size[1] / 2
    angle = math.radians(camera.tilt)
    corners = []
    for x, y in ((-width / 2, -height / 2), (width / 2, -height / 2), (width / 2, height / 2), (-width / 2, height / 2)):
        x += rng.uniform(-camera.keystone, camera.keystone) * width
        y += rng.uniform(-camera.keystone, camera.keystone) * height
        corners.append((centre_x + x * math.cos(angle) - y * math.sin(angle), centre_y + x * math.sin(angle) + y * math.cos(angle)))
    return corners


def _perspective(corners: list[tuple[float, float]], size: tuple[int, int]) -> tuple[float, ...]:
    """The eight coefficients Pillow wants: they map each photo pixel back to the page pixel it shows."""
    width, height = size
    sources = ((0, 0), (width, 0), (width, height), (0, height))
    rows, values = [], []
    for (x, y), (u, v) in zip(corners, sources):
        rows.append((x, y, 1, 0, 0, 0, -u * x, -u * y))
        rows.append((0, 0, 0, x, y, 1, -v * x, -v * y))
        values.extend((u, v))
    return tuple(float(value) for value in np.linalg.solve(np.array(rows), np.array(values)))


def _light(camera: Camera, rng: random.Random) -> np.ndarray:
    """Brightness over the frame: 1 where the light falls, `1 - shade` at the farthest corner."""
    width, height = camera.size
    lit_x, lit_y = rng.uniform(0, width), rng.uniform(0, height)
    xs = (np.arange(width, dtype=np.float32) - lit_x)[None, :]
    ys = (np.arange(height, dtype=np.float32) - lit_y)[:, None]
    distance = np.sqrt(xs * xs + ys * ys)
    return 1.0 - camera.shade * distance / distance.max()
