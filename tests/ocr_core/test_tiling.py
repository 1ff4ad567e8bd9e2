"""Tiling and merging: exact seam cases against a scripted engine, then long captures read by the real one."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image

from ocr_core.engines import Engine, get_engine
from ocr_core.job import Line, Point
from ocr_core.tiling import Tile, plan_tiles, read_tiled, reading_order
from tests.imagegen import WORDS, banner, chat_capture, font, words


def page(width: int, height: int) -> Image.Image:
    # Every pixel holds its own coordinates, so a crop tells a fake engine where it was cut from.
    ys, xs = np.mgrid[0:height, 0:width]
    return Image.fromarray((ys * 65536 + xs).astype(np.int32), "I")


def origin(crop: Image.Image) -> tuple[int, int]:
    value = int(np.asarray(crop)[0, 0])
    return value % 65536, value // 65536


def rect(left: float, top: float, right: float, bottom: float) -> tuple[Point, Point, Point, Point]:
    return ((left, top), (right, top), (right, bottom), (left, bottom))


@dataclass(frozen=True)
class Text:
    """Monospaced text on the fake page: `char` pixels per character, `height` tall."""

    text: str
    x: int
    y: int
    char: int = 20
    height: int = 30

    @property
    def right(self) -> int:
        return self.x + len(self.text) * self.char

    @property
    def bottom(self) -> int:
        return self.y + self.height


class FakeEngine:
    """Reads what a crop shows of each Text: a character a tile edge cuts comes back as '?' (or not at all when a
    mere sliver shows), a line cut across as '~'.

    With `jitter`, boxes move by up to that many pixels from tile to tile; with `split`, each
    tile may break a text into two boxes at a different space, as detectors do.
    """

    def __init__(self, texts: Iterable[Text], *, jitter: int = 0, split: bool = False) -> None:
        self.texts = list(texts)
        self.jitter = jitter
        self.split = split
        self.crops: list[tuple[int, int, int, int]] = []

    def _nudge(self, *key: int) -> int:
        return hash(key) % (2 * self.jitter + 1) - self.jitter if self.jitter else 0

    def recognise(self, crop: Image.Image) -> list[Line]:
        left, top = origin(crop)
        right, bottom = left + crop.width, top + crop.height
        self.crops.append((left, top, right, bottom))
        lines = []
        for item in self.texts:
            if item.bottom <= top or item.y >= bottom or item.right <= left or item.x >= right:
                continue
            seen = []
            for index, char in enumerate(item.text):
                x0 = item.x + index * item.char
                visible = min(x0 + item.char, right) - max(x0, left)
                if visible == item.char:
                    seen.append((x0, char))
                elif visible >= item.char / 3:
                    seen.append((x0, "?" if char != " " else " "))
            spaces = [index for index, (_, char) in enumerate(seen) if char == " "]
            cut = hash((left, top, item.x, item.y)) % (len(spaces) + 1) if self.split else 0
            parts = [seen[: spaces[cut - 1]], seen[spaces[cut - 1] + 1 :]] if cut else [seen]
            for part in parts:
                while part and part[0][1] == " ":
                    part = part[1:]
                while part and part[-1][1] == " ":
                    part = part[:-1]
                text = "".join(char for _, char in part)
                if not text.strip("? "):
                    continue
                if item.y < top or item.bottom > bottom:
                    text = "~" * len(text)
                key = (left, top, item.x, part[0][0])
                x0 = max(part[0][0], left) + self._nudge(*key, 0)
                x1 = min(part[-1][0] + item.char, right) + self._nudge(*key, 1)
                y0 = max(item.y, top) + self._nudge(*key, 2)
                y1 = min(item.bottom, bottom) + self._nudge(*key, 3)
                lines.append(Line(text=text, box=rect(x0 - left, y0 - top, x1 - left, y1 - top), score=0.9))
        return lines


class ScriptedEngine:
    """Returns fixed lines (in tile coordinates) for the tile at each origin."""

    def __init__(self, script: dict[tuple[int, int], list[Line]]) -> None:
        self.script = script

    def recognise(self, crop: Image.Image) -> list[Line]:
        return list(self.script.get(origin(crop), []))


def texts_of(lines: Iterable[Line]) -> list[str]:
    return [line.text for line in lines]


def rows_of(lines: Iterable[Line]) -> list[str]:
    rows: list[list[Line]] = []
    for line in reading_order(lines):
        if rows and abs(rows[-1][0].top - line.top) < 15:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [" ".join(line.text for line in row) for row in rows]


def row_edges(rows: list[list[Tile]]) -> list[float]:
    edges = {edge for row in rows for edge in (row[0].top, row[0].bottom)}
    middles = {(a[0].bottom + b[0].top) / 2 for a, b in pairwise(rows)}
    return sorted((edges | middles) - {0, rows[-1][0].bottom})


def column_edges(rows: list[list[Tile]]) -> list[float]:
    return sorted({edge for tile in rows[0] for edge in (tile.left, tile.right)} - {0, rows[0][-1].right})


# -- the plan ---------------------------------------------------------------------------------------


def test_tall_image_is_cut_into_rows_only() -> None:
    rows = plan_tiles(1080, 9000, tile_size=1600, overlap=200)
    spans = [(row[0].top, row[0].bottom) for row in rows]
    assert all(len(row) == 1 and (row[0].left, row[0].right) == (0, 1080) for row in rows)
    assert spans[0][0] == 0 and spans[-1][1] == 9000
    assert all(bottom - top <= 1600 for top, bottom in spans)
    assert all(a[1] - b[0] >= 200 for a, b in pairwise(spans))


def test_wide_image_is_cut_into_columns_only() -> None:
    rows = plan_tiles(6000, 400, tile_size=1600, overlap=200)
    spans = [(tile.left, tile.right) for tile in rows[0]]
    assert len(rows) == 1 and len(spans) > 1
    assert spans[0][0] == 0 and spans[-1][1] == 6000
    assert all(right - left <= 1600 for left, right in spans)
    assert all(a[1] - b[0] >= 200 for a, b in pairwise(spans))


@pytest.mark.parametrize(
    ("size", "shape"),
    [((1080, 1600), (1, 1)), ((2400, 1000), (1, 1)), ((2000, 2000), (2, 1)), ((4032, 3024), (3, 3))],
)
def test_plan_shapes(size: tuple[int, int], shape: tuple[int, int]) -> None:
    rows = plan_tiles(*size, tile_size=1600, overlap=200)
    assert (len(rows), len(rows[0])) == shape
    assert all(max(t.right - t.left, t.bottom - t.top) <= 2400 for row in rows for t in row)


def test_overlap_must_leave_room() -> None:
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(5000, 5000, tile_size=400, overlap=250)


# -- merging, with a scripted engine ----------------------------------------------------------------


def test_an_image_that_fits_goes_to_the_engine_whole() -> None:
    image = Image.new("RGB", (1000, 1500))
    seen: list[Image.Image] = []
    line = Line(text="hello", box=rect(10, 10, 110, 40), score=0.9)

    def recognise(crop: Image.Image) -> list[Line]:
        seen.append(crop)
        return [line]

    assert read_tiled(image, recognise, tile_size=1600, overlap=200) == [line]
    assert len(seen) == 1 and seen[0] is image


def test_tiles_already_read_are_not_read_again() -> None:
    rows = plan_tiles(300, 700, tile_size=400, overlap=100)
    first = rows[0][0]
    engine = FakeEngine([Text("first tile", x=10, y=40), Text("second tile", x=10, y=600)])
    known = {first.box: [Line("first tile", rect(10, 40, 210, 70), 0.9)]}

    lines = read_tiled(page(300, 700), engine.recognise, tile_size=400, overlap=100, known=known)

    assert texts_of(lines) == ["first tile", "second tile"]
    assert engine.crops == [rows[1][0].box]


def test_rows_keep_every_line_once_even_across_seams() -> None:
    rows = plan_tiles(300, 2000, tile_size=400, overlap=100)
    # A line centred on every tile edge and on every middle of an overlap, plus a filler line
    # centred in each gap between those: never two lines within one line height of each other.
    centres = row_edges(rows)
    centres += [(a + b) / 2 for a, b in pairwise([0.0, *centres, 2000.0]) if b - a > 70]
    texts = [Text(f"n{index:02d} {WORDS[index]}", x=10, y=round(c) - 15) for index, c in enumerate(sorted(centres))]
    engine = FakeEngine(texts)

    lines = read_tiled(page(300, 2000), engine.recognise, tile_size=400, overlap=100)

    assert len(engine.crops) == len(rows) > 4
    assert texts_of(lines) == [t.text for t in texts]
    assert [line.box for line in lines] == [rect(t.x, t.y, t.right, t.bottom) for t in texts]


def test_columns_join_lines_cut_by_seams() -> None:
    first = " ".join(words(1, 20))
    second = " ".join(words(2, 20))
    texts = [Text(first, x=15, y=10), Text(second, x=7, y=60)]
    size = (max(t.right for t in texts) + 20, 120)
    assert len(plan_tiles(*size, tile_size=400, overlap=100, max_side=500)[0]) > 5

    lines = read_tiled(page(*size), FakeEngine(texts).recognise, tile_size=400, overlap=100, max_side=500)

    assert texts_of(lines) == [first, second]
    assert [line.box for line in lines] == [rect(t.x, t.y, t.right, t.bottom) for t in texts]


def test_words_near_column_seams_are_not_doubled() -> None:
    rows = plan_tiles(2000, 200, tile_size=400, overlap=100, max_side=500)
    seams = [(a.right, b.left) for a, b in pairwise(rows[0])]
    texts = []
    for index, (end, start) in enumerate(seams):
        texts += [
            Text(f"in{index}", x=start + 20, y=10),  # wholly inside the overlap: both tiles see it
            Text(f"end{index}", x=start - 30, y=60),  # cut by the right tile's left edge
            Text(f"start{index}", x=end - 30, y=110),  # cut by the left tile's right edge
        ]

    lines = read_tiled(page(2000, 200), FakeEngine(texts).recognise, tile_size=400, overlap=100, max_side=500)

    assert sorted(texts_of(lines)) == sorted(t.text for t in texts)


def test_grid_reads_every_line_once() -> None:
    size = (1500, 1500)
    rows = plan_tiles(*size, tile_size=400, overlap=100, max_side=500)
    assert len(rows) > 2 and len(rows[0]) > 2
    centres = row_edges(rows)
    texts = [
        Text(" ".join(words(index, 10)), x=20 + (index % 3) * 5, y=round(c) - 12, char=20, height=24)
        for index, c in enumerate(centres)
    ]
    assert all(max(t.right for t in texts) > edge for edge in column_edges(rows))

    lines = read_tiled(page(*size), FakeEngine(texts).recognise, tile_size=400, overlap=100, max_side=500)

    assert texts_of(lines) == [t.text for t in texts]


@pytest.mark.parametrize("seed", range(16))
def test_random_pages_read_back_exactly(seed: int) -> None:
    rng = random.Random(seed)
    width, height = rng.choice([(900, 1400), (2600, 300), (1700, 1700), (480, 2500)])
    max_side = rng.choice([500, 1000])
    texts: list[Text] = []
    y = rng.randint(0, 20)
    while y + 30 < height:
        x = rng.randint(0, 60)
        while True:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
            if x + len(text) * 20 > width:
                break
            texts.append(Text(text, x=x, y=y))
            x += (len(text) + rng.randint(1, 6)) * 20
        y += rng.randint(40, 90)
    split = seed % 2 == 1
    engine = FakeEngine(texts, jitter=2, split=split)

    lines = read_tiled(page(width, height), engine.recognise, tile_size=400, overlap=100, max_side=max_side)

    assert len(engine.crops) > 2
    assert texts_of(lines) == texts_of(reading_order(lines))
    if split:
        # A text the engine splits comes back as two lines, seams or not: compare whole rows.
        assert rows_of(lines) == rows_of(Line(t.text, rect(t.x, t.y, t.right, t.bottom), 1.0) for t in texts)
    else:
        assert sorted(texts_of(lines)) == sorted(t.text for t in texts)


def test_fragments_split_differently_in_each_tile_are_joined() -> None:
    left, right = plan_tiles(700, 60, tile_size=400, overlap=100, max_side=500)[0]
    assert (left.right, right.left) == (400, 300)
    # Page text "foo bar W baz qux" from x=190, 20 px a character, so "a" and "b" straddle the
    # tile edges. The left tile splits the line in two and half sees "b"; the right tile starts
    # just after the cut "a" and splits the line elsewhere.
    script = {
        (0, 0): [Line("foo bar", rect(190, 10, 330, 40), 0.9), Line("W b", rect(350, 10, 400, 40), 0.7)],
        (300, 0): [Line("r W", rect(10, 10, 70, 40), 0.9), Line("baz qux", rect(85, 10, 230, 40), 0.9)],
    }

    lines = read_tiled(page(700, 60), ScriptedEngine(script).recognise, tile_size=400, overlap=100, max_side=500)

    assert texts_of(lines) == ["foo bar W baz qux"]
    assert lines[0].box == rect(190, 10, 530, 40)


def test_fragments_read_differently_are_cut_in_the_middle_of_the_overlap() -> None:
    # Both tiles read the shared 300..400 px differently: nothing to align on, so each side
    # keeps its characters up to the middle of the overlap.
    script = {
        (0, 0): [Line("aaaaaaaaaaXXXXX", rect(100, 10, 400, 40), 0.9)],
        (300, 0): [Line("YYYYYbbbbbbbbbb", rect(0, 10, 300, 40), 0.9)],
    }

    (line,) = read_tiled(page(700, 60), ScriptedEngine(script).recognise, tile_size=400, overlap=100, max_side=500)

    assert re.fullmatch(r"a{10}X{2,3}Y{2,3}b{10}", line.text) and len(line.text) == 25


def test_neighbouring_words_that_touch_at_a_seam_keep_their_space() -> None:
    # The boxes share 10 px, less than half a character: no text is read twice.
    script = {
        (0, 0): [Line("hello", rect(250, 10, 360, 40), 0.9)],
        (300, 0): [Line("world", rect(50, 10, 160, 40), 0.9)],
    }

    lines = read_tiled(page(700, 60), ScriptedEngine(script).recognise, tile_size=400, overlap=100, max_side=500)

    assert texts_of(lines) == ["hello world"]


def test_a_line_on_a_row_boundary_is_kept_once_despite_jitter() -> None:
    upper, lower = plan_tiles(300, 700, tile_size=400, overlap=100)
    middle = (upper[0].bottom + lower[0].top) / 2
    # The two tiles place the same line a pixel apart, on either side of the boundary.
    script = {
        (0, 0): [Line("edge", rect(10, middle - 16, 90, middle + 14), 0.9)],
        (0, lower[0].top): [Line("edge", rect(10, middle - lower[0].top - 14, 90, middle - lower[0].top + 16), 0.9)],
    }

    lines = read_tiled(page(300, 700), ScriptedEngine(script).recognise, tile_size=400, overlap=100)

    assert texts_of(lines) == ["edge"]


@pytest.mark.parametrize("shift", [-1, 1])
def test_a_line_on_a_row_boundary_is_never_lost(shift: int) -> None:
    upper, lower = plan_tiles(300, 700, tile_size=400, overlap=100)
    middle = (upper[0].bottom + lower[0].top) / 2
    below = middle - lower[0].top
    # Each tile puts the line's centre just inside the other tile's band.
    script = {
        (0, 0): [Line("edge", rect(10, middle - 15 + shift, 90, middle + 15 + shift), 0.9)],
        (0, lower[0].top): [Line("edge", rect(10, below - 15 - shift, 90, below + 15 - shift), 0.9)],
    }

    lines = read_tiled(page(300, 700), ScriptedEngine(script).recognise, tile_size=400, overlap=100)

    assert texts_of(lines) == ["edge"]


def test_slanted_neighbours_near_a_row_seam_are_not_taken_for_twins() -> None:
    # A photo's lines slant: each line's upright box is far taller than the line and takes in the
    # end of the next one, yet they are two lines, one owned by each tile.
    upper, lower = plan_tiles(1000, 800, tile_size=500, overlap=150)
    assert (upper[0].bottom, lower[0].top) == (475, 325)

    def slanted(text: str, top: float, shift: float = 0) -> Line:
        box = ((10, top - shift), (990, top + 100 - shift), (990, top + 130 - shift), (10, top + 30 - shift))
        return Line(text, box, 0.9)  # type: ignore[arg-type]

    script = {
        (0, 0): [slanted("upper line", 300), slanted("lower line", 345)],
        (0, 325): [Line("~~~~~", ((400, 0), (990, 75), (990, 105), (400, 30)), 0.5), slanted("lower line", 345, shift=325)],
    }

    lines = read_tiled(page(1000, 800), ScriptedEngine(script).recognise, tile_size=500, overlap=150)

    assert texts_of(lines) == ["upper line", "lower line"]


def test_reading_order_is_rows_then_left_to_right() -> None:
    def line(text: str, left: int, top: int, height: int = 30) -> Line:
        return Line(text=text, box=rect(left, top, left + 100, top + height), score=1.0)

    shuffled = [line("c", 500, 14), line("d", 20, 60), line("a", 20, 10), line("b", 250, 4), line("e", 260, 62, 20)]

    assert texts_of(reading_order(shuffled)) == ["a", "b", "c", "d", "e"]


# -- the real engine on long captures ---------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Engine:
    return get_engine("rapidocr", threads=0)


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def test_tall_chat_capture_reads_every_line_once_in_order(engine: Engine) -> None:
    rows = plan_tiles(1080, 9000, tile_size=1600, overlap=200)
    # Messages centred on every tile edge and overlap middle, the rest spread between them.
    centres = [round(c) for c in row_edges(rows)]
    for centre in range(90, 8950, 140):
        if all(abs(centre - taken) >= 140 for taken in centres):
            centres.append(centre)
    centres.sort()
    vocabulary = words(5, 50)
    messages = {centre: f"line {index}: {vocabulary[index % 50]}" for index, centre in enumerate(centres, start=1)}

    lines = read_tiled(chat_capture(messages), engine.recognise, tile_size=1600, overlap=200)

    numbers = [int(found.group(1)) for line in lines if (found := re.search(r"(\d+)", line.text))]
    assert numbers == list(range(1, len(messages) + 1))
    assert [squash(line.text) for line in lines] == [squash(text) for text in messages.values()]


def test_wide_banner_reads_as_one_sentence(engine: Engine) -> None:
    face = font(72)
    sentence = words(9, 1)[0]
    for word in words(10, 50)[1:]:
        if face.getlength(f"{sentence} {word}") > 5900:
            break
        sentence = f"{sentence} {word}"
    image = banner(sentence)
    image = image.crop((0, 0, 6000, 400)) if image.width > 6000 else image
    assert len(plan_tiles(*image.size, tile_size=1600, overlap=200)[0]) >= 4

    lines = read_tiled(image, engine.recognise, tile_size=1600, overlap=200)

    assert len(lines) == 1
    assert squash(lines[0].text) == squash(sentence)
