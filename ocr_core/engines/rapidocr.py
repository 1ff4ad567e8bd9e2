"""The embedded default: RapidOCR with the PP-OCR ONNX models its wheel ships, on the CPU.

Reading is split where RapidOCR's own pipeline splits (find the lines, then read them) so that
the reader can ask which way up a page is between the two, from lines already found: knowing
costs a few classifier runs, not a second detection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ocr_core.job import Line, Point

# Inputs reach the engine already tiled to at most this many pixels on the long side, so the
# engine must neither shrink them (illegible small text) nor blow them up (slow on small images).
MAX_SIDE = 2400
# Lines are found on the image shrunk to this share of its sides, a quarter of the detector's work:
# at half size it still finds text down to 11-pixel fonts, and its looser boxes read as well (the
# quality set's CER was equal or lower in every case but one character) ...
DETECT_SCALE = 0.5
# ... but a page whose thinnest line, cut out, is thinner than this many pixels holds small text
# the half-size search may have merged or missed, so it is searched again at full size, and so is a
# page where the half-size search found nothing.
THIN_LINE = 28
# RapidOCR's own floor: lines recognised with less confidence are noise.
MIN_SCORE = 0.5
# A line read with less confidence than this may be upside down (a label on a photographed box);
# only such lines are tried the other way up ...
DOUBTFUL = 0.8
# ... and believed turned over only when the direction classifier is this sure of it ...
FLIP_CERTAINTY = 0.9
# ... and the line, turned over, reads this much more confidently than it did.
FLIP_GAIN = 0.1
# The direction classifier sees 192×48 pixels: a longer line is squeezed until its letters are
# slivers (long lines came back garbled or turned over), so it is shown the middle of a line, at
# most this many times as long as the line is tall.
CLASSIFIER_ASPECT = 4.0

Quad = tuple[Point, Point, Point, Point]


@dataclass(frozen=True)
class Detection:
    """The lines RapidOCR found on one image, cut out and not yet read."""

    quads: list[Quad]  # in the image's pixels
    crops: list[np.ndarray]  # each line cut out as the recogniser gets it
    directions: list[Point]  # for each crop, the way its left-to-right runs in the image (a unit vector)


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self, threads: int = 0) -> None:
        from rapidocr import RapidOCR

        threads = threads if threads > 0 else -1
        self._ocr = RapidOCR(
            params={
                "Global.log_level": "error",  # "no text found" is an answer, not a warning
                "Global.max_side_len": MAX_SIDE,
                "Global.min_side_len": 30,
                # RapidOCR would run the direction classifier on every whole line (see
                # CLASSIFIER_ASPECT); pages are turned upright before they get here
                # (ocr_core.orientation) and doubtful lines are checked one by one instead.
                "Global.use_cls": False,
                "Global.text_score": 0.0,  # filtered here, after doubtful lines had their second try
                # One line per recognition run: batched lines are padded to the widest, and on the
                # CPU the padding costs more than the batching saves (114 vs 125 ms per line).
                "Rec.rec_batch_num": 1,
                "Det.limit_type": "max",  # the side is set per image (DETECT_SCALE)
                "Det.limit_side_len": MAX_SIDE,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads > 0 else -1,
            }
        )
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        self._detector_size = threading.Lock()  # the detector's input size is set per call

    def recognise(self, image: Image.Image) -> list[Line]:
        return self.recognise_detected(self.detect(image))

    def detect(self, image: Image.Image) -> Detection:
        """Find and cut out the lines of `image`, as RapidOCR's own call does before reading them."""
        from rapidocr.main import RapidOCRError
        from rapidocr.utils.process_img import map_boxes_to_original

        original = self._ocr.load_img(np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1]))
        prepared, record = self._ocr.preprocess_img(original)
        found = None
        for scale in (DETECT_SCALE, 1.0):
            at_scale = dict(record)  # RapidOCR notes its padding in it
            try:
                crops, found, used = (*self._detect_at(prepared, at_scale, scale), at_scale)
            except RapidOCRError:  # nothing that looks like text
                continue
            if min(crop.shape[0] for crop in crops) >= THIN_LINE:
                break
        if found is None:
            return Detection([], [], [])
        directions = [_crop_direction(box) for box in found.boxes]
        boxes = map_boxes_to_original(found.boxes, used, *original.shape[:2])
        return Detection([_quad(box) for box in boxes], crops, directions)

    def _detect_at(self, prepared: np.ndarray, record: dict, scale: float) -> tuple[list[np.ndarray], Any]:
        detector = self._ocr._load_det_model()
        with self._detector_size:
            detector.limit_side_len = max(32, round(max(prepared.shape[:2]) * scale))
            return self._ocr.detect_and_crop(prepared, record)

    def recognise_detected(self, detection: Detection) -> list[Line]:
        """Read the lines `detect` found: RapidOCR's result, with doubtful lines tried upside down."""
        from rapidocr.main import RapidOCRError

        if not detection.crops:
            return []
        try:
            read = self._ocr.recognize_txt(detection.crops)
        except RapidOCRError:
            return []
        readings = [(str(text), float(score)) for text, score in zip(read.txts, read.scores)]
        doubtful = [index for index, (text, score) in enumerate(readings) if score < DOUBTFUL and text.strip()]
        for index, turned in zip(doubtful, self._turned_over([detection.crops[i] for i in doubtful])):
            if turned is not None and turned[1] >= readings[index][1] + FLIP_GAIN:
                readings[index] = turned
        return [
            Line(text=text, box=quad, score=score)
            for quad, (text, score) in zip(detection.quads, readings)
            if score >= MIN_SCORE and text.strip()
        ]

    def upside_down(self, detection: Detection, which: Sequence[int]) -> list[float]:
        """For each chosen line of `detection`, how likely it is upside down as cut out, by RapidOCR's
        direction classifier on the middle of the line."""
        if not which:
            return []
        verdicts = self._classify([_middle(detection.crops[index]) for index in which])
        return [certainty if label == "180" else 1.0 - certainty for label, certainty in verdicts]

    def _turned_over(self, crops: list[np.ndarray]) -> list[tuple[str, float] | None]:
        if not crops:
            return []
        verdicts = self._classify([_middle(crop) for crop in crops])
        chosen = [i for i, (label, certainty) in enumerate(verdicts) if label == "180" and certainty >= FLIP_CERTAINTY]
        turned: list[tuple[str, float] | None] = [None] * len(crops)
        if chosen:
            from rapidocr.ch_ppocr_rec import TextRecInput

            flipped = [np.ascontiguousarray(np.rot90(crops[i], 2)) for i in chosen]
            output = self._ocr._load_rec_model()(TextRecInput(img=flipped))
            for i, text, score in zip(chosen, output.txts, output.scores):
                turned[i] = (str(text), float(score))
        return turned

    def _classify(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        return [(str(label), float(certainty)) for label, certainty in self._ocr._load_cls_model()(crops).cls_res]


def _crop_direction(box: np.ndarray) -> Point:
    # As rapidocr.utils.process_img.get_rotate_crop_image cuts: the crop runs from the box's first
    # corner to its second, down to its fourth; one at least half again as tall as wide is then
    # turned a quarter anticlockwise, so that it runs from the first corner to the fourth.
    width = max(np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[2] - box[3]))
    height = max(np.linalg.norm(box[0] - box[3]), np.linalg.norm(box[1] - box[2]))
    end = box[3] if int(height) >= 1.5 * max(int(width), 1) else box[1]
    dx, dy = float(end[0] - box[0][0]), float(end[1] - box[0][1])
    norm = max(float(np.hypot(dx, dy)), 1e-6)
    return (dx / norm, dy / norm)


def _middle(crop: np.ndarray) -> np.ndarray:
    height, width = crop.shape[:2]
    keep = min(width, max(1, round(CLASSIFIER_ASPECT * height)))
    start = (width - keep) // 2
    return crop[:, start : start + keep]


def _quad(box: Sequence[Sequence[float]]) -> Quad:
    return tuple((float(x), float(y)) for x, y in box)  # type: ignore[return-value]
