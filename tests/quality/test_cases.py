"""The generated set is what it claims: the same bytes every run, every case of issue 10, pictures the
size people post, orientation as the case says."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.quality.camera import ORIENTATION_TAG, jpeg, turned
from tests.quality.cases import CASES, CONTROLS, Sample, build

ISSUE_CASES = {
    "clean_document", "chat_capture", "phone_photo", "rotated", "wrong_exif", "two_columns", "vertical_chinese",
    "receipt", "watermark", "long_lines", "small_things",
}  # fmt: skip


def test_every_case_the_issue_names_is_in_the_set() -> None:
    assert set(CASES) == ISSUE_CASES
    assert set(CONTROLS) == {"clean_document", "chat_capture"}


@pytest.mark.parametrize("case", ["receipt", "vertical_chinese", "small_things"])
def test_cases_are_drawn_the_same_every_time(case: str) -> None:
    assert build([case]) == build([case])


@pytest.mark.parametrize("case", ["receipt", "phone_photo"])
def test_another_variant_draws_other_text_and_pixels(case: str) -> None:
    quoted, fresh = build([case]), build([case], variant=1)
    assert [s.name for s in quoted] == [s.name for s in fresh]
    for a, b in zip(quoted, fresh):
        assert a.truth != b.truth and a.data != b.data


def test_unknown_case_names_the_cases() -> None:
    with pytest.raises(KeyError, match="unknown quality case.*receipt"):
        build(["receipts"])


def test_a_watermark_in_the_truth_is_refused() -> None:
    with pytest.raises(ValueError, match="watermark"):
        Sample("watermark", "x", b"", "hello 王小明", ("王小明",))


def test_rotated_pictures_carry_no_exif_and_wrong_exif_ones_a_turning_tag() -> None:
    for sample in build(["rotated", "wrong_exif"]):
        tag = Image.open(io.BytesIO(sample.data)).getexif().get(ORIENTATION_TAG)
        if sample.case == "rotated":
            assert tag is None, sample.name
        else:
            assert tag in (3, 6, 8), sample.name


def test_turned_turns_clockwise() -> None:
    image = Image.new("L", (4, 2), 0)
    image.putpixel((0, 0), 255)  # top-left
    assert turned(image, 90).size == (2, 4)
    assert turned(image, 90).getpixel((1, 0)) == 255  # top-left goes to top-right
    assert turned(image, 180).getpixel((3, 1)) == 255
    with pytest.raises(ValueError):
        turned(image, 45)


def test_jpeg_writes_the_orientation_it_is_given() -> None:
    data = jpeg(Image.new("RGB", (8, 8)), 80, orientation=6)
    assert Image.open(io.BytesIO(data)).getexif()[ORIENTATION_TAG] == 6
