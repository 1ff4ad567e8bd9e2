"""Tables: how text is cut to Notion's limits, which line becomes the title, what each column receives."""

from __future__ import annotations

import pytest

from ocr_core.job import ImageJob, OcrResult
from sinks.notion.page import (
    batches,
    clip,
    first_line,
    paragraphs,
    properties,
    row_key,
    split_text,
    title,
    utf16_len,
)
from sinks.notion.schema import Schema

JOB = ImageJob(
    platform="feishu", bot_id="cli_a", chat_id="oc_team", message_id="om_42", image_key="img_v3_1",
    sender="ou_alice", sent_at="2025-03-04T05:06:07+00:00", source_url="https://applink.feishu.cn/client/message/om_42", index=1,
)


def result(text: str, **job_fields: str) -> OcrResult:
    job = ImageJob(**{**JOB.to_dict(), **job_fields})
    return OcrResult(job=job, text=text, lines=(), engine="rapidocr", image_sha256="0" * 64)


@pytest.mark.parametrize(
    ("text", "limit", "sizes"),
    [
        ("", 2000, []),
        ("a" * 2000, 2000, [2000]),
        ("a" * 2001, 2000, [2000, 1]),
        ("a" * 12_000, 2000, [2000] * 6),
        ("字" * 4500, 2000, [2000, 2000, 500]),
        ("😀" * 1001, 2000, [2000, 2]),  # an emoji is two UTF-16 units and is never cut in half
        ("a" + "😀" * 1000, 2000, [1999, 2]),
    ],
)
def test_split_text_counts_utf16_units(text: str, limit: int, sizes: list[int]) -> None:
    pieces = split_text(text, limit)
    assert [utf16_len(p) for p in pieces] == sizes
    assert "".join(pieces) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Weekly report\nline two", "Weekly report"),
        ("  \n•\n- \n3\nQ3 revenue up\n", "Q3 revenue up"),
        ("---\n会议纪要\n", "会议纪要"),
        ("", ""),
        ("!\n?", ""),
    ],
)
def test_first_meaningful_line(text: str, expected: str) -> None:
    assert first_line(text) == expected


@pytest.mark.parametrize(
    ("text", "template", "expected"),
    [
        ("Weekly report\nmore", "", "Weekly report"),
        ("", "", "Image from ou_alice, 2025-03-04 05:06"),
        ("Weekly report", "{date} {sender}: {first_line}", "2025-03-04 ou_alice: Weekly report"),
        ("x" * 500, "", "x" * 119 + "…"),
    ],
)
def test_title(text: str, template: str, expected: str) -> None:
    assert title(result(text), template) == expected


def test_a_long_text_becomes_paragraphs_within_limits() -> None:
    lines = [f"{i:04d} " + "文" * 35 for i in range(290)] + ["L" * 4700]
    text = "\n".join(lines)
    assert len(text) > 12_000
    blocks = paragraphs(text)
    assert len(blocks) == 291
    for block in blocks:
        parts = block["paragraph"]["rich_text"]
        assert 1 <= len(parts) <= 100
        assert all(utf16_len(p["text"]["content"]) <= 2000 for p in parts)
    assert [len(b["paragraph"]["rich_text"]) for b in blocks[-1:]] == [3]
    rebuilt = "\n".join("".join(p["text"]["content"] for p in b["paragraph"]["rich_text"]) for b in blocks)
    assert rebuilt == text
    assert [len(b) for b in batches(blocks)] == [100, 100, 91]


def test_a_line_over_100_text_objects_continues_in_another_block() -> None:
    blocks = paragraphs("z" * (2000 * 101 + 5))
    assert [len(b["paragraph"]["rich_text"]) for b in blocks] == [100, 2]


def test_row_key_is_readable_and_unique_per_image() -> None:
    key = row_key(JOB)
    assert key.startswith("om_42#1/") and key.endswith(JOB.job_id)
    other_image = ImageJob(**{**JOB.to_dict(), "image_key": "img_v3_2", "index": 2})
    other_bot = ImageJob(**{**JOB.to_dict(), "bot_id": "cli_b"})
    assert len({key, row_key(other_image), row_key(other_bot)}) == 3
    assert row_key(ImageJob(**{**JOB.to_dict(), "message_id": ""})) == ImageJob(**{**JOB.to_dict(), "message_id": ""}).job_id


SCHEMA = Schema(
    database_id="d", data_source_id="s", title="Inbox",
    columns={
        "name": ("标题", "title"), "text": ("内容", "rich_text"), "chat": ("Chat", "select"), "sender": ("Sender", "rich_text"),
        "time": ("Time", "date"), "image": ("Image", "files"), "source": ("Source", "url"), "engine": ("Engine", "select"),
        "message_id": ("Message ID", "rich_text"),
    },
)


def test_every_column_gets_a_value_of_its_type() -> None:
    values = properties(result("Weekly report\n" + "y" * 3000), SCHEMA, "", ("upload-1", "om_42-1.png"))
    assert values["标题"] == {"title": [{"type": "text", "text": {"content": "Weekly report"}}]}
    preview = values["内容"]["rich_text"]
    assert len(preview) == 1 and utf16_len(preview[0]["text"]["content"]) == 2000 and preview[0]["text"]["content"].endswith("…")
    assert values["Chat"] == {"select": {"name": "oc_team"}}
    assert values["Sender"]["rich_text"][0]["text"]["content"] == "ou_alice"
    assert values["Time"] == {"date": {"start": "2025-03-04T05:06:07+00:00"}}
    assert values["Image"] == {"files": [{"type": "file_upload", "file_upload": {"id": "upload-1"}, "name": "om_42-1.png"}]}
    assert values["Source"] == {"url": JOB.source_url}
    assert values["Engine"] == {"select": {"name": "rapidocr"}}
    assert values["Message ID"]["rich_text"][0]["text"]["content"] == row_key(JOB)


def test_empty_values_are_left_out() -> None:
    values = properties(result("", source_url="", sender="", sent_at=""), SCHEMA, "", None)
    assert set(values) == {"标题", "Chat", "Engine", "Message ID"}


def test_select_names_lose_commas() -> None:
    values = properties(result("t", chat_id="a,b"), SCHEMA, "", None)
    assert values["Chat"] == {"select": {"name": "a b"}}


def test_clip_keeps_the_limit() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcd", 3) == "ab…"
