"""Counters and latency histograms shared by every process of a hub, kept in Redis.

Any process records (`count`, `observe`); the API reads them back (`recorded`) and renders them
with its scrape-time gauges in Prometheus's text format (`render`). Recording never raises: a
metric is not worth failing a webhook or a job for.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis

log = logging.getLogger(__name__)

PREFIX = "ocrhub:metrics"
COUNTERS = f"{PREFIX}:counters"
# One hash for every histogram: field "<series>|le:<bound>", "<series>|count" or "<series>|sum",
# so a scrape reads all of them with one command, whatever the number of label sets.
HISTOGRAMS = f"{PREFIX}:histograms"
# Seconds: from a screenshot on a warm CPU engine to a large scan queued behind others.
BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# What a family recorded by another module means; one not listed still renders, with GENERIC_HELP.
HELP: dict[str, str] = {
    "ocrhub_webhook_events_total": "Webhook events received, by platform, bot and outcome; reason says why one was refused or ignored.",
    "ocrhub_ocr_seconds": "Seconds the OCR of one image took, by engine.",
    "ocrhub_ocr_total": "Images read, by engine and outcome.",
    "ocrhub_deliveries_total": "Deliveries of a result to a sink, by sink and outcome (a failed attempt is retried until retries run out).",
}
GENERIC_HELP = "Recorded by ocrhub."

_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def series(name: str, labels: Mapping[str, str] | None = None) -> str:
    """Prometheus text form: name{a="x",b="y"}, labels sorted, values escaped.

    A name or label name Prometheus would refuse is made valid (`_` for each bad character), so
    one caller's typo cannot make the whole scrape unreadable."""
    name = _identifier(name, _INVALID_NAME_CHARS)
    if not labels:
        return name
    inner = ",".join(f'{_identifier(str(k), _INVALID_LABEL_CHARS)}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _identifier(text: str, invalid: re.Pattern[str]) -> str:
    text = invalid.sub("_", text) or "_"
    return "_" + text if text[0].isdigit() else text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def count(conn: redis.Redis, name: str, labels: Mapping[str, str] | None = None, n: int = 1) -> None:
    """Add `n` to a counter, e.g. count(conn, "ocrhub_events_total", {"outcome": "queued"})."""
    try:
        conn.hincrby(COUNTERS, series(name, labels), n)
    except redis.RedisError as exc:
        log.debug("metric %s not recorded: %s", name, exc)


def observe(conn: redis.Redis, name: str, labels: Mapping[str, str] | None, seconds: float) -> None:
    """Add one observation to a histogram, e.g. observe(conn, "ocrhub_ocr_seconds", {"engine": "rapidocr"}, 1.7)."""
    if not math.isfinite(seconds):
        log.debug("metric %s not recorded: %r is not a duration", name, seconds)
        return
    key = series(name, labels)
    try:
        with conn.pipeline(transaction=False) as pipe:
            for bound in BUCKETS:
                if seconds <= bound:  # cumulative as stored: each bucket counts everything at or below it
                    pipe.hincrby(HISTOGRAMS, f"{key}|le:{bound:g}", 1)
            pipe.hincrby(HISTOGRAMS, f"{key}|count", 1)
            pipe.hincrbyfloat(HISTOGRAMS, f"{key}|sum", seconds)
            pipe.execute()
    except redis.RedisError as exc:
        log.debug("metric %s not recorded: %s", name, exc)


@dataclass
class Family:
    """One metric family as Prometheus shows it: HELP and TYPE once, then its samples."""

    name: str
    type: str  # counter | gauge | histogram
    help: str
    samples: list[tuple[str, float]] = field(default_factory=list)  # (series text, value)

    def add(self, labels: Mapping[str, str] | None, value: float) -> None:
        self.samples.append((series(self.name, labels), value))


def gauge(name: str, help: str, samples: Iterable[tuple[Mapping[str, str] | None, float]] = ()) -> Family:
    family = Family(name, "gauge", help)
    for labels, value in samples:
        family.add(labels, value)
    return family


def recorded(conn: redis.Redis) -> list[Family]:
    """Every counter and histogram any process recorded, sorted by name. Raises RedisError."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hgetall(COUNTERS)
        pipe.hgetall(HISTOGRAMS)
        counters, histograms = pipe.execute()
    families: dict[str, Family] = {}
    for family in _histograms(histograms):
        families[family.name] = family
    for raw_series, raw_value in sorted(counters.items()):
        text = raw_series.decode()
        name = _family_name(text)
        family = families.setdefault(name, Family(name, "counter", HELP.get(name, GENERIC_HELP)))
        if family.type != "counter":
            log.debug("counter %s skipped: %s is a %s", text, name, family.type)
            continue
        try:
            family.samples.append((text, int(raw_value)))
        except ValueError:
            log.debug("counter %s skipped: %r is not a count", text, raw_value)
    return [families[name] for name in sorted(families)]


def _histograms(raw: Mapping[bytes, bytes]) -> list[Family]:
    parts: dict[str, dict[str, float]] = {}
    for raw_field, raw_value in raw.items():
        key, _, part = raw_field.decode().rpartition("|")
        try:
            parts.setdefault(key, {})[part] = float(raw_value)
        except ValueError:
            log.debug("histogram field %s skipped: %r is not a number", raw_field, raw_value)
    families: dict[str, Family] = {}
    for key in sorted(parts):
        name, inner = _family_name(key), _labels_text(key)
        family = families.setdefault(name, Family(name, "histogram", HELP.get(name, GENERIC_HELP)))
        values = parts[key]
        total = values.get("count", 0.0)
        for bound in BUCKETS:
            family.samples.append((_with_le(f"{name}_bucket", inner, f"{bound:g}"), values.get(f"le:{bound:g}", 0.0)))
        family.samples.append((_with_le(f"{name}_bucket", inner, "+Inf"), total))
        family.samples.append((f"{name}_sum{{{inner}}}" if inner else f"{name}_sum", values.get("sum", 0.0)))
        family.samples.append((f"{name}_count{{{inner}}}" if inner else f"{name}_count", total))
    return list(families.values())


def _family_name(series_text: str) -> str:
    return series_text.partition("{")[0]


def _labels_text(series_text: str) -> str:
    """The `a="x",b="y"` between the braces, as `series` wrote it."""
    _, brace, rest = series_text.partition("{")
    return rest[:-1] if brace else ""


def _with_le(name: str, inner: str, le: str) -> str:
    return f'{name}{{{inner + "," if inner else ""}le="{le}"}}'


def render(families: Iterable[Family]) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        lines.extend(f"{text} {_number(value)}" for text, value in family.samples)
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 2**53):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
