"""The embedded default: RapidOCR with the PP-OCR ONNX models its wheel ships, on the CPU."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from ocr_core.job import Line

# Inputs reach the engine already tiled to at most this many pixels on the long side, so the
# engine must neither shrink them (illegible small text) nor blow them up (slow on small images).
MAX_SIDE = 2400


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
                "Det.limit_type": "max",
                "Det.limit_side_len": MAX_SIDE,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1 if threads > 0 else -1,
            }
        )
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)

    def recognise(self, image: Image.Image) -> list[Line]:
        output = self._ocr(np.asarray(image.convert("RGB"))[:, :, ::-1])
        if output.txts is None or output.boxes is None:
            return []
        lines = []
        for text, box, score in zip(output.txts, output.boxes, output.scores):
            points = tuple((float(x), float(y)) for x, y in box)
            lines.append(Line(text=str(text), box=points, score=float(score)))  # type: ignore[arg-type]
        return lines
