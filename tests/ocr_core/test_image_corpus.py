"""normalise() over Pillow's own test corpus (`Tests/images` of its source distribution: ~1,000
real, odd, truncated and hostile files): each ends as an RGB image ready for OCR or as one
ImageError with a one-line message, never another exception, a hang, a crash or decoder noise on
stderr; and the engine takes whatever the normaliser gives it."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ocr_core.engines import Engine, get_engine
from ocr_core.reader import read_bytes
from ocrhub.settings import Settings
from tests.corpus import CACHE_ENV, CorpusUnavailable, Outcome, normalise_each, pillow_images
from tests.imagegen import encode, text_image

# The slowest file takes a fraction of a second here; the bound is for a decoder that loops.
SECONDS_PER_FILE = 30.0
# Over 65% of Pillow 13's corpus is in a format we read and decodes; far fewer means good images
# are being refused (the test below also checks file by file against Pillow's own decoders).
READABLE_SHARE = 0.6
ENGINE_SAMPLE = 20  # images at least


def make_settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def corpus() -> list[Path]:
    try:
        folder = pillow_images()
    except CorpusUnavailable as exc:
        pytest.fail(f"Pillow's test images are needed and could not be fetched: {exc}", pytrace=False)
    return sorted(path for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def outcomes(corpus: list[Path]) -> list[Outcome]:
    settings = make_settings()
    return list(
        normalise_each(
            corpus,
            max_pixels=settings.max_image_pixels,
            max_bytes=settings.max_image_bytes,
            timeout=SECONDS_PER_FILE,
        )
    )


def test_every_file_ends_as_an_image_or_one_image_error(outcomes: list[Outcome], capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print("\n" + "\n".join(summary(outcomes)))
    failures = [f"{o.kind}: {name(o)}: {o.message}" for o in outcomes if o.kind not in ("image", "refused")]
    assert failures == []


def test_normalised_images_are_rgb_and_not_empty(outcomes: list[Outcome]) -> None:
    wrong = [f"{name(o)}: {o.mode} {o.size}" for o in images(outcomes) if o.mode != "RGB" or min(o.size) < 1]
    assert wrong == []


def test_refusals_are_one_clear_line(outcomes: list[Outcome]) -> None:
    unclear = [
        f"{name(o)}: {o.message!r}"
        for o in outcomes
        if o.kind == "refused"
        and (
            "\n" in o.message
            or not 10 <= len(o.message) <= 200
            # What Pillow says to a programmer is no message for a chat user.
            or re.search(r"<\w+[.\w]* object at|Traceback|errno|decoder error|PIL\.|\bNone\b", o.message)
        )
    ]
    assert unclear == []


def test_no_image_pillow_decodes_is_refused_as_unreadable(outcomes: list[Outcome]) -> None:
    # Refusing a file that Pillow's own decoders read is right only for the size limits.
    limits = re.compile(r"over the .* limit|has no pixels")
    refused = [f"{name(o)}: {o.message}" for o in outcomes if o.kind == "refused" and o.pillow_decodes and not limits.search(o.message)]
    assert refused == []


def test_enough_of_the_corpus_is_readable(outcomes: list[Outcome]) -> None:
    readable = len(images(outcomes))
    assert readable >= READABLE_SHARE * len(outcomes), f"only {readable} of {len(outcomes)} files normalised"


def test_decompression_bombs_are_refused_naming_the_setting(outcomes: list[Outcome]) -> None:
    found = {name(o): o for o in outcomes}
    bomb = found["decompression_bomb.gif"]
    assert bomb.kind == "refused"
    assert re.fullmatch(r"the image is 4365 MP, over the [\d.]+ MP limit \(OCRHUB_MAX_IMAGE_PIXELS\)", bomb.message), bomb.message
    # Its bomb is in the second frame, which the normaliser never decodes.
    assert found["decompression_bomb_extents.gif"].kind == "image"


def test_decoders_print_nothing(outcomes: list[Outcome]) -> None:
    # Warnings, Pillow's log records, libtiff's messages: in a worker each is a stray line in the
    # hub's log, without the job it belongs to.
    noisy = [f"{name(o)}: {o.stderr.strip()[:300]!r}" for o in outcomes if o.stderr]
    assert noisy == []


@pytest.fixture(scope="module")
def engine() -> Engine:
    return get_engine("rapidocr", threads=0)


@pytest.mark.slow  # up to a minute on a busy 2-core machine; the corpus checks above take seconds
def test_the_engine_reads_whatever_the_normaliser_gives_it(outcomes: list[Outcome], engine: Engine) -> None:
    settings = make_settings()
    sample = engine_sample(images(outcomes), settings.tile_size)
    assert len(sample) >= ENGINE_SAMPLE
    for outcome in sample:
        reading = read_bytes(Path(outcome.path).read_bytes(), engine, settings)
        assert (reading.width, reading.height) == outcome.size, name(outcome)
        for line in reading.lines:
            assert line.text.strip(), name(outcome)
            assert all(-1 <= x <= reading.width + 1 and -1 <= y <= reading.height + 1 for x, y in line.box), name(outcome)


def engine_sample(readable: list[Outcome], tile_size: int) -> list[Outcome]:
    """One image of every source colour mode (with and without a transparent colour) and of every
    format, the smallest, the most lopsided and the largest that is still one tile (larger ones
    are only more of the same tiles, and slow): whatever the normaliser makes of each, the engine
    must take."""
    by_path = sorted(readable, key=lambda o: o.path)
    chosen: dict[str, Outcome] = {}
    for kind in (lambda o: (o.source_mode, o.source_transparent), lambda o: o.source_format):
        for outcome in by_path:
            if kind(outcome) not in {kind(o) for o in chosen.values()}:
                chosen[outcome.path] = outcome
    one_tile = [o for o in by_path if max(o.size) <= tile_size]
    for pick in (
        min(by_path, key=lambda o: o.size[0] * o.size[1]),
        max(one_tile, key=lambda o: max(o.size) / min(o.size)),
        max(one_tile, key=lambda o: o.size[0] * o.size[1]),
    ):
        chosen.setdefault(pick.path, pick)
    return list(chosen.values())


def images(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.kind == "image"]


def name(outcome: Outcome) -> str:
    return outcome.path.split("/Tests/images/", 1)[-1]


def summary(outcomes: list[Outcome]) -> Iterator[str]:
    kinds = Counter(o.kind for o in outcomes)
    yield f"Pillow corpus: {len(outcomes)} files, " + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
    reasons = Counter(re.sub(r"\d[\d.×]*(?= MP|\))", "N", o.message.split(";")[0]) for o in outcomes if o.kind == "refused")
    for reason, n in reasons.most_common():
        yield f"  {n:4d} refused: {reason}"
    slowest = sorted(outcomes, key=lambda o: o.seconds, reverse=True)[:3]
    yield "  slowest: " + ", ".join(f"{name(o)} {o.seconds:.2f} s" for o in slowest)
    hungriest = max(outcomes, key=lambda o: o.grown_kb)
    yield f"  most memory: {name(hungriest)} +{hungriest.grown_kb / 1024:.0f} MB peak"


def test_a_file_that_never_finishes_is_cut_off_and_the_run_goes_on(tmp_path: Path) -> None:
    # Reading a FIFO nobody writes to blocks for ever, as a looping decoder would.
    stuck = tmp_path / "stuck"
    os.mkfifo(stuck)
    good = tmp_path / "good.png"
    good.write_bytes(encode(text_image(["after the stuck one"]), "PNG"))

    outcomes = list(normalise_each([stuck, good], max_pixels=10**6, max_bytes=10**6, timeout=2.0))

    assert [(o.kind, o.message) for o in outcomes] == [("hang", "no answer in 2 s"), ("image", "")]
    assert 2.0 <= outcomes[0].seconds < 10


def test_a_child_that_dies_is_reported_and_replaced(tmp_path: Path) -> None:
    # The child reads each file before normalising it; a missing one kills it, as a crash in a decoder would.
    good = tmp_path / "good.png"
    good.write_bytes(encode(text_image(["after the crash"]), "PNG"))

    first, second = normalise_each([tmp_path / "missing.png", good], max_pixels=10**6, max_bytes=10**6, timeout=30.0)

    assert (first.kind, first.message) == ("crash", "the process died (exit 1)")
    assert "FileNotFoundError" in first.stderr
    assert second.kind == "image"


def test_a_corpus_that_cannot_be_fetched_is_an_error_that_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(CorpusUnavailable, match=r"could not download Pillow 0\.0\.1's source distribution .*pip download"):
        pillow_images("0.0.1")  # no such release
    assert not (tmp_path / "pillow-0.0.1").exists()
