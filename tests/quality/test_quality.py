"""ocrhub's reading of the quality set, case by case: the controls exact, no case worse than it was last
measured, issue 10's goal (CER ≤ 0.03 per case and overall) met, and no watermark read as text.

`python bench/quality.py` prints the same figures beside raw RapidOCR's.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.quality.cases import CASES, CONTROLS, Sample, build
from tests.quality.cer import Tally, mean_rate, normalise
from tests.quality.readers import ocrhub

pytestmark = pytest.mark.slow

GOAL = 0.03
# CER per case through ocrhub as last measured (`python bench/quality.py`; when the set was made, at
# 84730d4, they were phone_photo 0.190, rotated 0.537, wrong_exif 0.847, two_columns 0.696,
# vertical_chinese 0.971, receipt 0.091, watermark 0.033, long_lines 0.022, small_things 0.013);
# lower them as the reading improves, so that a gain once made is kept.
MEASURED = {
    "phone_photo": 0.000,
    "rotated": 0.000,
    "wrong_exif": 0.000,
    "two_columns": 0.000,
    "vertical_chinese": 0.000,
    "receipt": 0.000,
    "watermark": 0.000,
    "long_lines": 0.000,
    "small_things": 0.011,
}
# Room for noise between machines (thread counts change onnxruntime's sums in the last bits), no more.
SLACK = 0.01
PHOTO_CASES = ("phone_photo", "rotated", "wrong_exif", "receipt")
OTHERS = [case for case in CASES if case not in CONTROLS]


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return build()


@pytest.fixture(scope="module")
def readings(samples: list[Sample]) -> dict[str, str]:
    read = ocrhub()
    return {f"{sample.case}/{sample.name}": read(sample.data) for sample in samples}


@pytest.fixture(scope="module")
def by_case(samples: list[Sample], readings: dict[str, str]) -> dict[str, Tally]:
    tallies: dict[str, list[Tally]] = {}
    for sample in samples:
        tallies.setdefault(sample.case, []).append(Tally.of(sample.truth, readings[f"{sample.case}/{sample.name}"]))
    return {case: Tally.total(items) for case, items in tallies.items()}


def test_photos_are_the_size_phones_post(samples: list[Sample]) -> None:
    for sample in samples:
        if sample.case in PHOTO_CASES:
            assert 1500 <= max(Image.open(io.BytesIO(sample.data)).size) <= 3000, sample.name


@pytest.mark.parametrize("case", CONTROLS)
def test_controls_are_read_exactly(case: str, samples: list[Sample], readings: dict[str, str]) -> None:
    for sample in samples:
        if sample.case == case:
            assert normalise(readings[f"{case}/{sample.name}"]) == normalise(sample.truth), sample.name


@pytest.mark.parametrize("case", OTHERS)
def test_no_case_reads_worse_than_when_measured(case: str, by_case: dict[str, Tally]) -> None:
    assert by_case[case].rate <= MEASURED[case] + SLACK


@pytest.mark.parametrize("case", OTHERS)
def test_case_reaches_the_goal(case: str, by_case: dict[str, Tally]) -> None:
    assert by_case[case].rate <= GOAL


def test_overall_reaches_the_goal(by_case: dict[str, Tally]) -> None:
    assert mean_rate(by_case) <= GOAL


def test_watermarks_are_not_read_as_text(samples: list[Sample], readings: dict[str, str]) -> None:
    for sample in samples:
        for stamp in sample.absent:
            assert stamp not in readings[f"{sample.case}/{sample.name}"], sample.name
