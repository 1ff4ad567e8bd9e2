"""The quality set: generated pictures of what people post, each with the text it says in reading order.

Every case is drawn from a fixed seed, so the same bytes come out on every run and machine with the
same Pillow, numpy and fonts. `clean_document` and `chat_capture` are the controls, the pages the
engine already reads exactly; the others are the cases of issue 10. `build()` draws them all (or the ones named).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from tests.imagegen import chat_capture as draw_chat_capture
from tests.imagegen import encode, text_image, words
from tests.quality import layout, text
from tests.quality.camera import Camera, jpeg, png, snapshot

__all__ = ["CASES", "CONTROLS", "Sample", "build"]


@dataclass(frozen=True)
class Sample:
    case: str
    name: str
    data: bytes  # the file as posted
    truth: str  # its text, one line per line, in reading order
    absent: tuple[str, ...] = ()  # drawn on the image but not its text: a watermark's name

    def __post_init__(self) -> None:
        for stamp in self.absent:
            if stamp in self.truth:
                raise ValueError(f"{self.case}/{self.name}: watermark text {stamp!r} also occurs in the truth")


def _sample(case: str, name: str, data: bytes, lines: list[str], absent: tuple[str, ...] = ()) -> Sample:
    return Sample(case, name, data, "\n".join(lines), absent)


def _rng(seed: int, variant: int) -> random.Random:
    return random.Random(seed + 7919 * variant)


def _camera(variant: int, *args: object, **damage: object) -> Camera:
    """A camera as the case sets it; in another variant its tilt, keystone and blur moved by up to a
    third, the tilt possibly the other way."""
    camera = Camera(*args, **damage)  # type: ignore[arg-type]
    if not variant:
        return camera
    rng = random.Random(variant)
    return replace(
        camera,
        tilt=camera.tilt * rng.uniform(0.67, 1.33) * rng.choice((1, -1)),
        keystone=camera.keystone * rng.uniform(0.67, 1.33),
        blur=camera.blur * rng.uniform(0.67, 1.33),
    )


def clean_document(variant: int = 0) -> list[Sample]:
    rng = _rng(1001, variant)
    short = [f"{' '.join(words(rng.randrange(10**6), 3))} {rng.randint(10, 9999)}" for _ in range(8)]
    page = [f"{' '.join(words(rng.randrange(10**6), 4))} {rng.randint(10, 99999)}" for _ in range(20)]
    return [
        _sample("clean_document", "screenshot", encode(text_image(short), "PNG"), short),
        _sample("clean_document", "page_jpeg", encode(text_image(page, size=32), "JPEG", quality=90), page),
    ]


def chat_capture(variant: int = 0) -> list[Sample]:
    samples = []
    for name, height, seed in (("one_screen", 1500, 5), ("scrolled", 5000, 6)):
        vocabulary = words(seed + 1000 * variant, 50)
        centres = range(90, height - 60, 140)
        messages = {centre: f"line {index}: {vocabulary[index % 50]}" for index, centre in enumerate(centres, start=1)}
        image = draw_chat_capture(messages, height=height)
        samples.append(_sample("chat_capture", name, encode(image, "PNG"), [messages[c] for c in sorted(messages)]))
    return samples


# Sheets photographed are as tall as A4 for their width, whatever part of them the text fills.
SHEET = 1.41


def _english_page(rng: random.Random, lines: int, chars: int, size: int, *, aspect: float = SHEET) -> layout.Drawn:
    return layout.text_page([text.english_line(rng, chars) for _ in range(lines)], layout.latin(size), aspect=aspect)


def _serif_page(rng: random.Random, lines: int, chars: int, size: int) -> layout.Drawn:
    return layout.text_page([text.english_line(rng, chars) for _ in range(lines)], layout.latin(size, serif=True), aspect=SHEET)


def _chinese_page(rng: random.Random, lines: int, chars: int, size: int, *, aspect: float = SHEET) -> layout.Drawn:
    return layout.text_page([text.chinese_run(rng, chars) for _ in range(lines)], layout.cjk(size), aspect=aspect)


def phone_photo(variant: int = 0) -> list[Sample]:
    rng = _rng(1002, variant)
    shots = (
        ("english_page", _english_page(rng, 16, 58, 30), _camera(variant, tilt=2.0, keystone=0.04, blur=1.0, quality=70)),
        ("chinese_page", _chinese_page(rng, 16, 24, 32), _camera(variant, (1500, 2000), tilt=-3.0, keystone=0.06, blur=1.3, quality=60)),
        (
            "serif_notes",
            _serif_page(rng, 14, 52, 30),
            _camera(variant, (2250, 3000), tilt=1.0, keystone=0.08, blur=1.8, shade=0.3, noise=6.0, quality=50),
        ),
    )
    return [_sample("phone_photo", name, snapshot(page, camera, rng), lines) for name, (page, lines), camera in shots]


def rotated(variant: int = 0) -> list[Sample]:
    """Photos saved sideways or upside down with no EXIF tag (chat apps strip it)."""
    rng = _rng(1003, variant)
    shots = (
        (90, _english_page(rng, 16, 56, 30), _camera(variant, tilt=1.5, keystone=0.03)),
        (180, _chinese_page(rng, 14, 22, 32), _camera(variant, (1500, 2000), tilt=-1.0, keystone=0.03)),
        (270, _english_page(rng, 18, 60, 30), _camera(variant, (2250, 3000), tilt=0.5, keystone=0.04, blur=1.4)),
    )
    return [
        _sample("rotated", f"turned_{degrees}", snapshot(page, camera, rng, clockwise=degrees), lines)
        for degrees, (page, lines), camera in shots
    ]


def wrong_exif(variant: int = 0) -> list[Sample]:
    """Upright pixels whose EXIF tag still says to turn them (an editor turned the pixels, not the tag)."""
    rng = _rng(1004, variant)
    camera = _camera(variant, keystone=0.03, blur=0.9, quality=80)
    return [
        _sample("wrong_exif", f"tag_{orientation}", snapshot(page, camera, rng, orientation=orientation), lines)
        for orientation, (page, lines) in ((6, _english_page(rng, 14, 54, 30)), (3, _chinese_page(rng, 14, 22, 32)))
    ]


def two_columns(variant: int = 0) -> list[Sample]:
    rng = _rng(1005, variant)
    english = layout.two_columns(
        "Quarterly Report for the Operations Team",
        [text.english_line(rng, 40) for _ in range(12)],
        [text.english_line(rng, 40) for _ in range(12)],
        layout.latin(28),
        layout.latin(40),
    )
    chinese = layout.two_columns(
        "项目进展与下一步计划",
        [text.chinese_run(rng, 16) for _ in range(12)],
        [text.chinese_run(rng, 16) for _ in range(12)],
        layout.cjk(30),
        layout.cjk(44),
    )
    photo = snapshot(chinese[0], _camera(variant, keystone=0.02, blur=0.8, shade=0.12, quality=80), rng)
    return [
        _sample("two_columns", "english_screenshot", png(english[0]), english[1]),
        _sample("two_columns", "chinese_photo", photo, chinese[1]),
    ]


def vertical_chinese(variant: int = 0) -> list[Sample]:
    """Columns top to bottom, read from the right; the tall one is cut by a tile seam."""
    rng = _rng(1006, variant)
    short = layout.vertical_columns([text.chinese_run(rng, 16, punctuate=False) for _ in range(10)], layout.cjk(44))
    tall = layout.vertical_columns([text.chinese_run(rng, 30, punctuate=False) for _ in range(12)], layout.cjk(48))
    return [
        _sample("vertical_chinese", "poem_page", png(short[0]), short[1]),
        _sample("vertical_chinese", "tall_page", jpeg(tall[0], 85), tall[1]),
    ]


def receipt(variant: int = 0) -> list[Sample]:
    """Item and amount rows far apart, photographed a little crooked."""
    rng = _rng(1007, variant)
    samples = []
    shops = (
        ("chinese", text.ITEMS_ZH, ["星光咖啡 国贸店", "2024-05-17 12:36", "单号 0382"], "合计", ["谢谢惠顾 欢迎再次光临"]),
        ("english", text.ITEMS_EN, ["CORNER CAFE", "17 May 2024 08:12", "Table 7"], "TOTAL", ["Thank you, come again"]),
    )
    for (name, items, header, total_label, footer), face, tilt in zip(shops, (layout.cjk(30), layout.latin(28)), (3.0, -2.5)):
        rows = [(item, text.amount(rng)) for item in rng.sample(items, 10)]
        total = sum(float(price) for _, price in rows)
        paper, lines = layout.receipt(header, [*rows, (total_label, f"{total:.2f}")], footer, face)
        camera = _camera(variant, (1500, 2000), fill=0.8, tilt=tilt, keystone=0.03, blur=0.9, background=(58, 52, 48), quality=72)
        samples.append(_sample("receipt", name, snapshot(paper, camera, rng), lines))
    return samples


def watermark(variant: int = 0) -> list[Sample]:
    """A document screenshot stamped all over with the viewer's name, faintly, as Feishu does."""
    rng = _rng(1008, variant)
    chinese, chinese_lines = _chinese_page(rng, 14, 30, 30, aspect=0)
    english, english_lines = _english_page(rng, 14, 70, 28, aspect=0)
    return [
        _sample(
            "watermark", "chinese_doc",
            png(layout.watermarked(chinese, "王小明 8421", layout.cjk(34), seed=1 + 2 * variant)), chinese_lines, ("王小明", "8421"),
        ),
        _sample(
            "watermark", "english_doc",
            jpeg(layout.watermarked(english, "李娜 lina 0417", layout.cjk(32), angle=-25, seed=2 + 2 * variant), 85),
            english_lines, ("李娜", "lina", "0417"),
        ),
    ]  # fmt: skip


def long_lines(variant: int = 0) -> list[Sample]:
    """Forty plain-English lines of about a hundred characters, where the direction classifier misfires."""
    page, lines = _english_page(_rng(1009, variant), 40, 100, 26, aspect=0)
    return [_sample("long_lines", "document_screenshot", png(page), lines)]


def small_things(variant: int = 0) -> list[Sample]:
    """An `@` before a handle, a desktop window's three coloured dots, the full-width `？` of Chinese."""
    rng = _rng(1010, variant)
    samples = []
    for name, width, chrome in (("desktop_window", 1280, True), ("phone_chat", 1080, False)):
        messages = []
        for index in range(6):
            sender = f"{text.person(rng)} 10:{rng.randint(10, 59)}"
            body = text.chinese_run(rng, rng.randint(8, 14), punctuate=False)
            if index % 2 == 0:
                body = f"@{rng.choice(text.HANDLES)} {body}？"
            else:
                body = f"{body}，@{rng.choice(text.HANDLES)} 你看可以吗？"
            messages.append((sender, body, index % 3 == 1))
        image, lines = layout.chat_window("产品讨论群", messages, layout.cjk(32), width=width, chrome=chrome)
        samples.append(_sample("small_things", name, png(image), lines))
    return samples


CASES: dict[str, Callable[[int], list[Sample]]] = {
    "clean_document": clean_document,
    "chat_capture": chat_capture,
    "phone_photo": phone_photo,
    "rotated": rotated,
    "wrong_exif": wrong_exif,
    "two_columns": two_columns,
    "vertical_chinese": vertical_chinese,
    "receipt": receipt,
    "watermark": watermark,
    "long_lines": long_lines,
    "small_things": small_things,
}
CONTROLS = ("clean_document", "chat_capture")


def build(names: Iterable[str] | None = None, variant: int = 0) -> list[Sample]:
    """The samples of the named cases (all when None), case by case in the order given; `variant` 0
    is the set the figures are quoted on, any other number draws the same cases afresh (other text,
    noise and camera angles) to check that the reading was not tuned to the set."""
    chosen = list(CASES) if names is None else list(names)
    unknown = [name for name in chosen if name not in CASES]
    if unknown:
        raise KeyError(f"unknown quality case(s) {', '.join(unknown)}; the cases are {', '.join(CASES)}")
    return [sample for name in chosen for sample in CASES[name](variant)]
