"""The embedded default: RapidOCR with the PP-OCR ONNX models its wheel ships, on the CPU."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ocr_core.job import Line, Point

# Inputs reach the engine already tiled to at most this many pixels on the long side, so the
# engine must neither shrink them (illegible small text) nor blow them up (slow on small images).
MAX_SIDE = 2400
# RapidOCR's own floor: lines recognised with less confidence are noise.
MIN_SCORE = 0.5
# A line read with less confidence than this may be upside down (a label on a photographed box);
# only such lines are tried the other way up.
DOUBTFUL = 0.8
# The direction classifier must be this sure before an upside-down reading is believed ...
FLIP_CERTAINTY = 0.9
# ... and the line, turned over, must read this much more confidently than it did.
FLIP_GAIN = 0.1

Quad = tuple[Point, Point, Point, Point]


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
                # The per-line direction classifier sees a line squeezed into 192×48 pixels: long
                # lines come back garbled or turned over. Pages are turned upright before they get
                # here (ocr_core.orientation), and doubtful lines are checked one by one below.
                "Global.use_cls": False,
                "Global.text_score": 0.0,  # filtered below, after doubtful lines had their second try
                "Det.limit_type": "max",
                "Det.limit_side_len": MAX_SIDE,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads > 0 else -1,
            }
        )
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)

    def recognise(self, image: Image.Image) -> list[Line]:
        pixels = _bgr(image)
        output = self._ocr(pixels)
        if output.txts is None or output.boxes is None:
            return []
        quads = [_quad(box) for box in output.boxes]
        readings = list(zip((str(text) for text in output.txts), (float(score) for score in output.scores)))
        doubtful = [index for index, (_, score) in enumerate(readings) if score < DOUBTFUL]
        if doubtful:
            for index, turned in zip(doubtful, self._turned_over(pixels, [quads[i] for i in doubtful])):
                if turned is not None and turned[1] >= readings[index][1] + FLIP_GAIN:
                    readings[index] = turned
        return [
            Line(text=text, box=quad, score=score)
            for quad, (text, score) in zip(quads, readings)
            if score >= MIN_SCORE and text.strip()
        ]

    def detect(self, image: Image.Image) -> list[Quad]:
        """Where the text lines are, without reading them: four corners each, clockwise from top-left."""
        output = self._ocr._load_det_model()(_bgr(image))
        return [] if output.boxes is None else [_quad(box) for box in output.boxes]

    def read_boxes(self, image: Image.Image, quads: Sequence[Quad], *, upside_down: bool = False) -> list[tuple[str, float]]:
        """Text and confidence of each box's line, cut out as the engine cuts it (a tall box is turned a
        quarter anticlockwise), or that crop turned over when `upside_down`."""
        if not quads:
            return []
        crops = _crops(_bgr(image), quads)
        if upside_down:
            crops = [np.ascontiguousarray(np.rot90(crop, 2)) for crop in crops]
        return self._read(crops)

    def _turned_over(self, pixels: np.ndarray, quads: Sequence[Quad]) -> list[tuple[str, float] | None]:
        crops = _crops(pixels, quads)
        verdicts = self._ocr._load_cls_model()(crops).cls_res
        candidates = [i for i, (label, certainty) in enumerate(verdicts) if label == "180" and certainty >= FLIP_CERTAINTY]
        readings = self._read([np.ascontiguousarray(np.rot90(crops[i], 2)) for i in candidates]) if candidates else []
        turned: list[tuple[str, float] | None] = [None] * len(quads)
        for i, reading in zip(candidates, readings):
            turned[i] = reading
        return turned

    def _read(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        from rapidocr.ch_ppocr_rec import TextRecInput

        output = self._ocr._load_rec_model()(TextRecInput(img=crops))
        return [(str(text), float(score)) for text, score in zip(output.txts, output.scores)]


def _bgr(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _quad(box: Sequence[Sequence[float]]) -> Quad:
    return tuple((float(x), float(y)) for x, y in box)  # type: ignore[return-value]


def _crops(pixels: np.ndarray, quads: Sequence[Quad]) -> list[np.ndarray]:
    from rapidocr.utils.process_img import get_rotate_crop_image

    return [get_rotate_crop_image(pixels, np.array(quad, dtype=np.float32)) for quad in quads]
