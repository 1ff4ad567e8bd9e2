"""The scoring the quality set relies on: exact edit distance, and a normalisation that forgives only layout."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.quality.cer import Tally, cer, levenshtein, mean_rate, normalise


def textbook_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


# A small alphabet makes matches, near-matches and repeats common, where a bit-parallel slip shows.
texts = st.text(alphabet="abc 和？?", max_size=90)


@given(texts, texts)
def test_levenshtein_equals_the_textbook_table(a: str, b: str) -> None:
    assert levenshtein(a, b) == textbook_distance(a, b)


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("kitten", "sitting", 3), ("", "abc", 3), ("abc", "", 3), ("same", "same", 0), ("flaw", "lawn", 2)],
)
def test_levenshtein_known_pairs(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance == levenshtein(b, a)


def test_levenshtein_of_a_long_page_is_quick_and_right() -> None:
    page = "the quick brown fox jumps over the lazy dog " * 100
    assert levenshtein(page, page.replace("fox", "cat")) == 300


def test_line_breaks_weigh_as_spaces_and_runs_of_whitespace_as_one() -> None:
    assert normalise("  Latte large\n28.00 \t\nTOTAL   28.00\n") == "Latte large 28.00 TOTAL 28.00"
    assert cer("Latte large 28.00", "Latte large\n28.00") == 0
    assert cer("Latte large", "Lattelarge") == 1 / len("Latte large")


def test_spaces_beside_chinese_are_typesetting() -> None:
    assert normalise("黄涛 10:37\n@lina 明天 几点？ ok") == "黄涛10:37 @lina明天几点？ok"
    assert cer("拿铁咖啡 28.00\n合计 28.00", "拿铁咖啡28.00合计28.00") == 0


def test_full_width_punctuation_is_not_forgiven() -> None:
    assert cer("可以吗？", "可以吗?") == 1 / 4


def test_reading_order_counts() -> None:
    # Every character read, none in its place: nearly as bad as reading nothing.
    truth = "harbor 4711 garden\nyellow planet 815"
    assert cer(truth, "yellow planet 815\nharbor 4711 garden") > 0.8


def test_text_that_is_not_there_counts_once_per_character() -> None:
    truth = "meeting at three"
    assert cer(truth, f"Li Na 0417\n{truth}\nLi Na 0417") == len(" Li Na 0417") * 2 / len(truth)


def test_tallies_pool_images_and_the_overall_is_the_mean_of_cases() -> None:
    pooled = Tally.total([Tally.of("abcd", "abce"), Tally.of("xy", "xy")])
    assert (pooled.edits, pooled.length, pooled.rate) == (1, 6, 1 / 6)
    assert mean_rate({"long": Tally(0, 1000), "short": Tally(1, 10)}) == pytest.approx(0.05)


def test_an_empty_truth_has_no_rate() -> None:
    with pytest.raises(ValueError, match="no text"):
        Tally.of(" \n", "anything")
