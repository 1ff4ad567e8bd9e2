"""Reading order from line boxes alone: rows, columns, tilted rows, and the pages that must keep row order."""

from __future__ import annotations

import math
import random

import pytest

from ocr_core.job import Line
from ocr_core.layout import page_order, slant

HEIGHT = 30
CHAR = 16


def line(text: str, left: float, top: float, *, width: float | None = None, turn: float = 0.0) -> Line:
    """A line `text` at (left, top), CHAR pixels a character; the page turned `turn` degrees clockwise
    about its origin, as a crooked photo would show it."""
    width = len(text) * CHAR if width is None else width
    corners = ((left, top), (left + width, top), (left + width, top + HEIGHT), (left, top + HEIGHT))
    cos, sin = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    box = tuple((x * cos - y * sin, x * sin + y * cos) for x, y in corners)
    return Line(text=text, box=box, score=0.95)  # type: ignore[arg-type]


def texts(lines: list[Line]) -> list[str]:
    return [item.text for item in lines]


def shuffled(lines: list[Line], seed: int = 0) -> list[Line]:
    copy = list(lines)
    random.Random(seed).shuffle(copy)
    return copy


def prose(tag: str, index: int) -> str:
    return f"{tag}{index:02d} the quarterly report was sent"


def test_single_column_reads_rows_top_to_bottom_then_left_to_right() -> None:
    page = [line("alpha", 20, 10), line("beta", 250, 4), line("gamma", 500, 14), line("delta", 20, 60), line("epsilon", 260, 62)]

    assert texts(page_order(shuffled(page))) == ["alpha", "beta", "gamma", "delta", "epsilon"]


def test_two_columns_read_column_by_column_under_their_title() -> None:
    left = [line(prose("L", i), 60, 120 + 48 * i) for i in range(12)]
    right = [line(prose("R", i), 700, 120 + 48 * i) for i in range(12)]
    title = line("Quarterly Report for the Operations Team", 300, 40)

    ordered = texts(page_order(shuffled([title, *left, *right])))

    assert ordered == texts([title, *left, *right])


def test_columns_whose_rows_do_not_line_up() -> None:
    left = [line(prose("L", i), 60, 100 + 48 * i) for i in range(10)]
    right = [line(prose("R", i), 700, 117 + 48 * i) for i in range(10)]

    assert texts(page_order(shuffled(left + right, 1))) == texts(left + right)


def test_ragged_columns_whose_longer_lines_reach_into_the_gutter() -> None:
    # Some left lines end well short of the gutter, so the white between the columns is widest
    # where only a few lines reach: the gutter is where none but the title does.
    rng = random.Random(8)
    left = [line(prose("L", i), 60, 120 + 48 * i, width=rng.randint(420, 570)) for i in range(14)]
    right = [line(prose("R", i), 700, 120 + 48 * i, width=rng.randint(420, 570)) for i in range(14)]
    title = line("A title over both columns", 250, 40, width=800)

    assert texts(page_order(shuffled([title, *left, *right], 9))) == texts([title, *left, *right])


def test_a_heading_across_both_columns_ends_the_columns_above_it() -> None:
    above = [line(prose("A", i), 60, 100 + 48 * i) for i in range(5)] + [line(prose("B", i), 700, 100 + 48 * i) for i in range(5)]
    heading = line("A heading that runs right across the page", 200, 360, width=900)
    below = [line(prose("C", i), 60, 420 + 48 * i) for i in range(5)] + [line(prose("D", i), 700, 420 + 48 * i) for i in range(5)]

    assert texts(page_order(shuffled([*above, heading, *below], 2))) == texts([*above, heading, *below])


def test_three_columns() -> None:
    columns = [[line(f"{tag}{i} words of a short col", x, 80 + 48 * i) for i in range(8)] for tag, x in (("a", 40), ("b", 480), ("c", 920))]

    assert texts(page_order(shuffled([item for column in columns for item in column], 3))) == texts(
        [item for column in columns for item in column]
    )


def test_a_chat_keeps_its_order_though_its_two_sides_never_meet() -> None:
    # Their bubbles on the left, mine on the right: prose on both sides with white between, but
    # never two messages at one height.
    messages = [line(prose("M", i), 60 if i % 2 == 0 else 560, 80 + 70 * i) for i in range(14)]

    assert texts(page_order(shuffled(messages, 4))) == texts(messages)


@pytest.mark.parametrize("turn", [0.0, 3.0, -2.5])
def test_receipt_rows_keep_item_and_amount_together_even_when_tilted(turn: float) -> None:
    rng = random.Random(5)
    rows = []
    for index in range(12):
        item = rng.choice(["Latte large", "Americano", "Green tea", "Bagel with cream", "Orange juice"])
        amount = f"{rng.randint(1, 99)}.{rng.randint(0, 99):02d}"
        rows += [line(item, 40, 100 + 45 * index, turn=turn), line(amount, 780 - len(amount) * CHAR, 100 + 45 * index, turn=turn)]

    assert texts(page_order(shuffled(rows, 6))) == texts(rows)


def test_a_table_of_long_cells_beside_short_ones_stays_in_rows() -> None:
    rows = []
    for index in range(10):
        rows += [line(prose("item", index), 40, 100 + 45 * index), line(f"{index + 1}.50 CNY", 900, 100 + 45 * index)]

    assert texts(page_order(shuffled(rows, 7))) == texts(rows)


def test_slant_is_the_median_angle_of_the_wide_lines() -> None:
    page = [line(prose("L", i), 60, 100 + 48 * i, turn=2.0) for i in range(9)] + [line("x", 10, 10, width=20, turn=30)]

    assert slant(page) == pytest.approx(2.0, abs=0.01)
    assert slant([]) == 0.0
