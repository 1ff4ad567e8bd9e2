"""What one recognised image becomes in Notion: property values and body blocks, within Notion's size limits.

Notion counts text length in UTF-16 code units (its API is JavaScript), so an emoji costs two;
every text object holds at most 2000, every array at most 100 items, every append 100 blocks.
"""

from __future__ import annotations

import string
from datetime import datetime, timezone
from typing import Any

from ocr_core.job import ImageJob, OcrResult
from sinks.base import SinkConfigError
from sinks.notion.image import PDF
from sinks.notion.schema import Schema

TEXT_LIMIT = 2000
ARRAY_LIMIT = 100
BLOCKS_PER_REQUEST = 100
TITLE_CHARS = 120
SELECT_CHARS = 100

TEMPLATE_FIELDS = ("first_line", "sender", "chat", "date", "time", "engine", "message_id", "index", "platform")


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Pieces of at most `limit` UTF-16 units, never cutting a character in two."""
    pieces: list[str] = []
    start, used = 0, 0
    for i, char in enumerate(text):
        cost = 2 if ord(char) > 0xFFFF else 1
        if used + cost > limit:
            pieces.append(text[start:i])
            start, used = i, 0
        used += cost
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def clip(text: str, limit: int) -> str:
    if utf16_len(text) <= limit:
        return text
    return split_text(text, limit - 1)[0] + "…"


def rich_text(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"content": piece}} for piece in split_text(text)]


def paragraphs(text: str) -> list[dict[str, Any]]:
    """One paragraph block per OCR line; a line too long for one block continues in the next."""
    blocks: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = rich_text(line)
        for start in range(0, len(parts), ARRAY_LIMIT):
            blocks.append({"object": "block", "type": "paragraph", "paragraph": {"rich_text": parts[start:start + ARRAY_LIMIT]}})
    return blocks


FILE_BLOCKS = ("image", "pdf")  # the block the original goes into, always the page's first


def image_block(upload_id: str, content_type: str = "") -> dict[str, Any]:
    """The original shown at the top of the page: an image, or a PDF viewer for a PDF."""
    kind = "pdf" if content_type == PDF else "image"
    return {"object": "block", "type": kind, kind: {"type": "file_upload", "file_upload": {"id": upload_id}}}


def batches(blocks: list[dict[str, Any]], size: int = BLOCKS_PER_REQUEST) -> list[list[dict[str, Any]]]:
    return [blocks[i:i + size] for i in range(0, len(blocks), size)]


def first_line(text: str) -> str:
    """The first line with at least two letters or digits: skips stray marks, bullets and lone numbers."""
    for line in text.splitlines():
        line = line.strip()
        if sum(c.isalnum() for c in line) >= 2:
            return line
    return ""


def row_key(job: ImageJob) -> str:
    """The Message ID cell, and the idempotency key: one row per image, readable, and exact.

    The message id and the image's position tell a person which image it is; the job id
    (platform, bot, message and image key hashed) makes it unique even for two bots in a chat.
    """
    if not job.message_id:
        return job.job_id
    return f"{job.message_id}#{job.index}/{job.job_id}"


def check_template(template: str) -> None:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise SinkConfigError(f"Notion title template {template!r} is malformed ({exc}); fields: {', '.join(TEMPLATE_FIELDS)}") from None
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise SinkConfigError(f"Notion title template {template!r} uses unknown field(s) {unknown}: use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")


def sent_at(result: OcrResult) -> datetime | None:
    for value in (result.job.sent_at, result.created_at):
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return None


def title(result: OcrResult, template: str) -> str:
    job = result.job
    moment = sent_at(result)
    fields = {
        "first_line": first_line(result.text),
        "sender": job.sender,
        "chat": job.chat_id,
        "date": moment.date().isoformat() if moment else "",
        "time": moment.strftime("%H:%M") if moment else "",
        "engine": result.engine,
        "message_id": job.message_id,
        "index": str(job.index),
        "platform": job.platform,
    }
    text = " ".join(template.format_map(fields).split()) if template else fields["first_line"]
    if not text:
        who = job.sender or job.chat_id or job.platform
        text = f"Image from {who}" + (f", {fields['date']} {fields['time']}" if moment else "")
    return clip(text, TITLE_CHARS)


def properties(result: OcrResult, schema: Schema, template: str, upload: tuple[str, str] | None) -> dict[str, Any]:
    """Property values by property name, each in the form its column's type takes."""
    job = result.job
    moment = sent_at(result)
    values: dict[str, Any] = {
        "name": title(result, template),
        "text": clip(result.text, TEXT_LIMIT),
        "chat": job.chat_id,
        "sender": job.sender,
        "time": moment.isoformat() if moment else None,
        "image": upload,
        "source": job.source_url if 0 < len(job.source_url) <= TEXT_LIMIT else None,
        "engine": result.engine,
        "message_id": row_key(job),
    }
    out: dict[str, Any] = {}
    for key, (name, kind) in schema.columns.items():
        value = values[key]
        if value is None or value == "":
            continue
        out[name] = _value(kind, value)
    return out


def _value(kind: str, value: Any) -> dict[str, Any]:
    if kind in ("title", "rich_text"):
        return {kind: rich_text(value)[:ARRAY_LIMIT]}
    if kind == "select":
        # Commas are not allowed in select option names.
        return {"select": {"name": clip(value.replace(",", " "), SELECT_CHARS)}}
    if kind == "date":
        return {"date": {"start": value}}
    if kind == "url":
        return {"url": value}
    if kind == "files":
        upload_id, filename = value
        return {"files": [{"type": "file_upload", "file_upload": {"id": upload_id}, "name": filename}]}
    raise ValueError(f"no writer for Notion property type {kind!r}")
