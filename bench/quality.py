"""Character error rate per case of the quality set: ocrhub's reading beside raw RapidOCR's.

    python bench/quality.py [--cases phone_photo,rotated] [--readers ocrhub,rapidocr] [--variant N] [--images] [--json] [--save DIR]

The set (tests/quality/cases.py) is generated from fixed seeds: phone photos, pages turned without
EXIF or with a wrong tag, two columns, vertical Chinese, receipts, watermarks, long English lines,
small marks, and the controls (a clean document and a chat capture, read exactly today). `ocrhub`
is what `ocrhub ocr` does with default settings; `rapidocr` is the rapidocr package called with its
defaults on the same bytes. CER is edits per character of truth after the normalisation in
tests/quality/cer.py (reading order counts, line breaks weigh as spaces); a case's CER pools its
images, and `overall` is the mean of the cases'. Seconds are the readers' time for the chosen set.
`--variant N` draws the same cases with other text, noise and camera angles, to check that
the reading was not tuned to the set. `--images` adds a row per image, `--json` prints the same as JSON, `--save DIR` writes each image
with its truth and both readings for a look. Needs the test extras (`pip install -e '.[test]'`) for
the Chinese font the set is drawn with.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from tests.quality.cases import CASES, Sample, build  # noqa: E402
from tests.quality.cer import Tally, mean_rate, normalise  # noqa: E402
from tests.quality.readers import READERS  # noqa: E402


@dataclass(frozen=True)
class Measurement:
    """What each reader read of each sample, and how long it took."""

    samples: list[Sample]
    readings: dict[str, dict[str, str]]  # reader → sample key → text
    seconds: dict[str, float]

    @property
    def readers(self) -> list[str]:
        return list(self.readings)

    @property
    def cases(self) -> list[str]:
        return list(dict.fromkeys(sample.case for sample in self.samples))

    def tally(self, reader: str, sample: Sample) -> Tally:
        return Tally.of(sample.truth, self.readings[reader][key(sample)])

    def case_tally(self, reader: str, case: str) -> Tally:
        return Tally.total(self.tally(reader, sample) for sample in self.samples if sample.case == case)

    def overall(self, reader: str) -> float:
        return mean_rate({case: self.case_tally(reader, case) for case in self.cases})

    def watermark_hits(self, reader: str, sample: Sample) -> int:
        return sum(self.readings[reader][key(sample)].count(stamp) for stamp in sample.absent)

    def as_json(self) -> dict[str, object]:
        def image(sample: Sample) -> dict[str, object]:
            scores: dict[str, object] = {"case": sample.case, "chars": len(normalise(sample.truth))}
            for reader in self.readers:
                scores[reader] = round(self.tally(reader, sample).rate, 4)
                if sample.absent:
                    scores[f"{reader}_watermark_hits"] = self.watermark_hits(reader, sample)
            return scores

        return {
            "cases": {
                case: {reader: round(self.case_tally(reader, case).rate, 4) for reader in self.readers} for case in self.cases
            },
            "overall": {reader: round(self.overall(reader), 4) for reader in self.readers},
            "seconds": {reader: round(seconds, 1) for reader, seconds in self.seconds.items()},
            "images": {key(sample): image(sample) for sample in self.samples},
        }


def measure(samples: list[Sample], readers: list[str]) -> Measurement:
    readings: dict[str, dict[str, str]] = {}
    seconds: dict[str, float] = {}
    for name in readers:
        read = READERS[name]()
        read(samples[0].data)  # the first call loads models; it is not what is measured
        started = time.perf_counter()
        readings[name] = {key(sample): read(sample.data) for sample in samples}
        seconds[name] = time.perf_counter() - started
    return Measurement(samples, readings, seconds)


def key(sample: Sample) -> str:
    return f"{sample.case}/{sample.name}"


def table(measured: Measurement, per_image: bool) -> str:
    readers = measured.readers
    header = f"{'case':<32}{'images':>7}{'chars':>7}" + "".join(f"{name:>10}" for name in readers)
    rule = "-" * len(header)
    rows = [header, rule]
    for case in measured.cases:
        members = [sample for sample in measured.samples if sample.case == case]
        rates = "".join(f"{measured.case_tally(reader, case).rate:>10.3f}" for reader in readers)
        rows.append(f"{case:<32}{len(members):>7}{sum(len(normalise(s.truth)) for s in members):>7}{rates}")
        for sample in members if per_image else ():
            rates = "".join(f"{measured.tally(reader, sample).rate:>10.3f}" for reader in readers)
            rows.append(f"  {sample.name:<30}{'':>7}{len(normalise(sample.truth)):>7}{rates}")
    rows.append(rule)
    rows.append(f"{'overall (mean of cases)':<46}" + "".join(f"{measured.overall(reader):>10.3f}" for reader in readers))
    rows.append(f"{'seconds reading':<46}" + "".join(f"{measured.seconds[reader]:>10.1f}" for reader in readers))
    stamped = [sample for sample in measured.samples if sample.absent]
    if stamped:
        hits = "".join(f"{sum(measured.watermark_hits(reader, s) for s in stamped):>10}" for reader in readers)
        rows.append(f"{'watermark stamps read as text':<46}{hits}")
    return "\n".join(rows)


def save(measured: Measurement, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sample in measured.samples:
        stem = key(sample).replace("/", "__")
        suffix = ".jpg" if Image.open(io.BytesIO(sample.data)).format == "JPEG" else ".png"
        (folder / f"{stem}{suffix}").write_bytes(sample.data)
        (folder / f"{stem}.truth.txt").write_text(sample.truth + "\n", encoding="utf-8")
        for reader, texts in measured.readings.items():
            (folder / f"{stem}.{reader}.txt").write_text(texts[key(sample)] + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--readers", default=",".join(READERS), help=f"comma-separated, from: {', '.join(READERS)}")
    parser.add_argument("--variant", type=int, default=0, help="0: the set the figures are quoted on; another number draws it afresh")
    parser.add_argument("--images", action="store_true", help="a row per image under each case")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--save", type=Path, help="write images, truths and readings into this folder")
    args = parser.parse_args()
    readers = [name for name in args.readers.split(",") if name]
    unknown = [name for name in readers if name not in READERS]
    if unknown:
        parser.error(f"unknown reader(s) {', '.join(unknown)}; the readers are {', '.join(READERS)}")
    try:
        samples = build((name for name in args.cases.split(",") if name), args.variant)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    measured = measure(samples, readers)
    if args.save:
        save(measured, args.save)
    if args.json:
        print(json.dumps(measured.as_json(), ensure_ascii=False, indent=2))
    else:
        print(table(measured, args.images))


if __name__ == "__main__":
    main()
