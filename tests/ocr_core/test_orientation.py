"""Which way up: the vote from line directions, then pages turned without EXIF read by the real engine."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from PIL import Image

from ocr_core.engines import get_engine
from ocr_core.engines.rapidocr import RapidOcrEngine
from ocr_core.job import Line, Point
from ocr_core.orientation import Orientable, page_turn, upright
from ocr_core.reader import read_bytes
from ocrhub.settings import Settings
from tests.imagegen import chat_capture, encode, text_image, words
from tests.quality import layout, text

Quad = tuple[Point, Point, Point, Point]


def lying(length: float, at: float = 0) -> Quad:
    return ((0, at), (length, at), (length, at + 30), (0, at + 30))


@dataclass
class Found:
    quads: list[Quad]
    directions: list[Point]


class Classifier:
    """Says each line is upside down with the given likelihood; reads nothing."""

    name = "scripted"

    def __init__(self, upside_down: Sequence[float]) -> None:
        self.answers = list(upside_down)
        self.asked: list[int] = []

    def detect(self, image: Image.Image) -> Found:
        raise AssertionError("page_turn works from a detection it is given")

    def upside_down(self, detection: Found, which: Sequence[int]) -> list[float]:
        self.asked = list(which)
        return [self.answers[index] for index in which]

    def recognise_detected(self, detection: Found) -> list[Line]:
        raise AssertionError("page_turn reads nothing")


@pytest.mark.parametrize(
    ("direction", "over", "turn"),
    [((1, 0), 0.0, 0), ((1, 0), 0.9, 180), ((0, 1), 0.1, 90), ((0, 1), 0.8, 270), ((0, -1), 0.0, 270), ((-1, 0), 0.0, 180)],
)
def test_each_line_says_which_way_its_text_runs(direction: Point, over: float, turn: int) -> None:
    found = Found([lying(400, 50 * i) for i in range(3)], [direction] * 3)
    assert page_turn(found, Classifier([over] * 3)) == turn


def test_the_longest_elongated_lines_are_asked_and_the_majority_wins() -> None:
    quads = [lying(100 + 50 * i, 40 * i) for i in range(8)] + [((0, 0), (40, 0), (40, 35), (0, 35))]  # last: a square
    found = Found(quads, [(1.0, 0.0)] * 9)
    engine = Classifier([0.0, 0.0, 0.9, 0.9, 0.9, 0.9, 0.1, 0.9, 0.9])

    assert page_turn(found, engine) == 180
    assert sorted(engine.asked) == [2, 3, 4, 5, 6, 7]


def test_a_tie_keeps_the_page_as_it_is_and_no_lines_say_nothing() -> None:
    found = Found([lying(300, 0), lying(300, 40)], [(1.0, 0.0)] * 2)
    assert page_turn(found, Classifier([0.0, 1.0])) == 0
    assert page_turn(Found([], []), Classifier([])) == 0


def test_upright_turns_the_image_back() -> None:
    image = Image.new("RGB", (30, 10), "white")
    image.putpixel((0, 0), (255, 0, 0))  # the top-left corner
    for turn, corner in ((0, (0, 0)), (90, (0, 29)), (180, (29, 9)), (270, (9, 0))):
        turned = upright(image, turn)
        assert turned.getpixel(corner) == (255, 0, 0)


# -- the real engine ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> RapidOcrEngine:
    found = get_engine("rapidocr", threads=0)
    assert isinstance(found, RapidOcrEngine) and isinstance(found, Orientable)
    return found


def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def document(seed: int, count: int = 8) -> list[str]:
    rng = random.Random(seed)
    return [f"{' '.join(words(rng.randrange(10**6), 3))} {rng.randint(10, 9999)}" for _ in range(count)]


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_a_page_turned_without_exif_reads_as_if_upright(engine: RapidOcrEngine, turn: int) -> None:
    lines = document(40 + turn)
    photo = text_image(lines).rotate(-turn, expand=True)  # the text turned clockwise, as a phone held sideways stores it

    reading = read_bytes(encode(photo, "PNG"), engine, settings())

    assert reading.turned == turn
    assert reading.text == "\n".join(lines)
    assert (reading.width, reading.height) == upright(photo, turn).size


def test_a_long_capture_turned_sideways_is_tiled_across_its_lines(engine: RapidOcrEngine) -> None:
    # 5000 pixels wide once turned: tiles cut it into columns, which would cut every line along its
    # length; turned back first, tiles cut across lines as for any capture.
    vocabulary = words(7, 50)
    messages = {centre: f"line {index}: {vocabulary[index % 50]}" for index, centre in enumerate(range(90, 4940, 140), start=1)}
    capture = chat_capture(messages, height=5000).rotate(90, expand=True)

    reading = read_bytes(encode(capture, "PNG"), engine, settings())

    assert reading.turned == 270
    assert [line.text.replace(" ", "") for line in reading.lines] == [text.replace(" ", "") for text in messages.values()]


def test_vertical_chinese_reads_column_by_column_from_the_right(engine: RapidOcrEngine) -> None:
    rng = random.Random(11)
    columns = [text.chinese_run(rng, 14, punctuate=False) for _ in range(6)]
    image, truth = layout.vertical_columns(columns, layout.cjk(44))

    reading = read_bytes(encode(image, "PNG"), engine, settings())

    assert reading.turned == 90
    assert [line.text for line in reading.lines] == truth


def test_long_english_lines_are_read_as_they_stand(engine: RapidOcrEngine) -> None:
    # The direction classifier, shown whole lines of about a hundred characters, garbled or turned
    # some of them over; it now sees only the middle of a line, and only of a doubtful one.
    rng = random.Random(12)
    lines = [text.english_line(rng, 100) for _ in range(12)]
    image, truth = layout.text_page(lines, layout.latin(24))

    reading = read_bytes(encode(image, "PNG"), engine, settings())

    assert reading.turned == 0
    assert reading.text == "\n".join(truth)


def test_an_upside_down_label_on_an_upright_page_is_turned_over(engine: RapidOcrEngine) -> None:
    lines = document(13, 4)
    label = f"{words(14, 1)[0]} label 4711"
    page = text_image(lines)
    stuck_on = text_image([label]).rotate(180)
    image = Image.new("RGB", (max(page.width, stuck_on.width), page.height + stuck_on.height), "white")
    image.paste(page, (0, 0))
    image.paste(stuck_on, (0, page.height))

    reading = read_bytes(encode(image, "PNG"), engine, settings())

    assert reading.turned == 0
    assert reading.text == "\n".join([*lines, label])
