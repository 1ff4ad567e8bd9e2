"""The values that flow between bots, the core and sinks: plain, frozen, JSON-serialisable."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

Point = tuple[float, float]


@dataclass(frozen=True)
class ImageJob:
    """One image to read, as a bot saw it. Raw platform JSON stays in the bot."""

    platform: str
    bot_id: str
    chat_id: str
    message_id: str
    image_key: str
    sender: str = ""
    sent_at: str = ""  # ISO 8601, UTC
    routes: tuple[str, ...] = ()
    chat_type: str = ""
    context: str = ""  # text around the image (a rich-text post's words)
    source_url: str = ""
    index: int = 0  # position of the image within its message
    blob: str = ""  # Redis key of the image bytes once stored; empty until fetched
    resource: str = "image"  # how the platform serves it: "image", or "file" (a picture or PDF sent as a file)
    name: str = ""  # the file's name, for a file

    @property
    def job_id(self) -> str:
        """Stable across re-deliveries of the same image: the key for idempotency everywhere."""
        raw = f"{self.platform}\x1f{self.bot_id}\x1f{self.message_id}\x1f{self.image_key}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        # Every field is a plain value: a shallow copy, not asdict's recursive deep copy, which cost
        # a webhook a tenth of its time per event.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["routes"] = list(self.routes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageJob:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["routes"] = tuple(known.get("routes") or ())
        return cls(**known)


@dataclass(frozen=True)
class Line:
    """One recognised text line; `box` is four (x, y) points clockwise from top-left, in source pixels."""

    text: str
    box: tuple[Point, Point, Point, Point]
    score: float

    @property
    def top(self) -> float:
        return min(p[1] for p in self.box)

    @property
    def bottom(self) -> float:
        return max(p[1] for p in self.box)

    @property
    def left(self) -> float:
        return min(p[0] for p in self.box)

    @property
    def right(self) -> float:
        return max(p[0] for p in self.box)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "box": [list(p) for p in self.box], "score": self.score}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Line:
        box = tuple((float(x), float(y)) for x, y in data["box"])
        return cls(text=data["text"], box=box, score=float(data["score"]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class OcrResult:
    """What the core hands to every sink. `error` is set when the image could not be read."""

    job: ImageJob
    text: str
    lines: tuple[Line, ...]
    engine: str
    image_sha256: str
    width: int = 0
    height: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: str = ""
    created_at: str = ""
    error_kind: str = ""  # ImageError.kind, or "unavailable" when the platform would not hand the image over

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job.to_dict(),
            "text": self.text,
            "lines": [line.to_dict() for line in self.lines],
            "engine": self.engine,
            "image_sha256": self.image_sha256,
            "width": self.width,
            "height": self.height,
            "timings": dict(self.timings),
            "error": self.error,
            "created_at": self.created_at,
            "error_kind": self.error_kind,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OcrResult:
        return cls(
            job=ImageJob.from_dict(data["job"]),
            text=data["text"],
            lines=tuple(Line.from_dict(x) for x in data.get("lines", ())),
            engine=data["engine"],
            image_sha256=data["image_sha256"],
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            timings=dict(data.get("timings", {})),
            error=data.get("error", ""),
            created_at=data.get("created_at", ""),
            error_kind=data.get("error_kind", ""),
        )
