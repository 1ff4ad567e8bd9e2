"""The Notion sink with the real notion-client against the emulator, and a real Redis for budget and markers."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from PIL import Image

from ocr_core.errors import PermanentError
from ocr_core.job import ImageJob, OcrResult
from ocrhub.settings import Settings
from sinks.base import SinkConfigError, SinkContext, SinkError
from sinks.notion import NotionSink
from sinks.notion.page import row_key
from tests.emulators.notion import NotionEmulator

LONG_TEXT = "\n".join([f"{i:04d} 第{i}行 " + "lorem ipsum dolor " * 2 for i in range(290)] + ["L" * 4700])
FULL = ("Name", "Text", "Chat", "Sender", "Time", "Image", "Source", "Engine", "Message ID")


@pytest.fixture
def notion() -> Iterator[NotionEmulator]:
    with NotionEmulator() as emulator:
        yield emulator


def png(size: tuple[int, int] = (320, 200), noise: bool = False) -> bytes:
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise else Image.new("RGB", size, "white")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def ocr_result(n: int = 0, text: str = "Weekly report\nrevenue up 12%", **fields: object) -> OcrResult:
    job = ImageJob(
        platform="feishu", bot_id="cli_test", chat_id="oc_team", message_id=f"om_{n}", image_key=f"img_{n}",
        sender="ou_alice", sent_at="2025-03-04T05:06:07+00:00", source_url=f"https://applink.feishu.cn/client/message/om_{n}",
        **fields,  # type: ignore[arg-type]
    )
    return OcrResult(job=job, text=text, lines=(), engine="rapidocr", image_sha256="0" * 64)


def sink_for(notion: NotionEmulator, database_id: str, settings: Settings, conn: redis.Redis, **options: object) -> NotionSink:
    return NotionSink.from_url(urlsplit(notion.sink_url(database_id, **options)), SinkContext(settings, conn))


def body_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.strip())


def test_one_row_with_every_property_the_full_body_and_the_image(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    sink = sink_for(notion, database_id, settings, conn)
    sink.check()
    result = ocr_result(7, LONG_TEXT)
    assert len(result.text) > 12_000

    where = sink.deliver(result, png())

    [row] = notion.workspace.rows(source_id)
    assert where == f"notion page https://www.notion.so/{row['id'].replace('-', '')}"
    cell = lambda name: notion.workspace.cell(row, name)  # noqa: E731
    assert set(row["properties"]) == set(FULL)
    assert cell("Name") == "0000 第0行 lorem ipsum dolor lorem ipsum dolor"
    assert len(cell("Text")) == 2000 and cell("Text").endswith("…") and LONG_TEXT.startswith(cell("Text")[:-1])
    assert (cell("Chat"), cell("Sender"), cell("Engine")) == ("oc_team", "ou_alice", {"name": "rapidocr"})
    assert cell("Time")["start"] == "2025-03-04T05:06:07+00:00"
    assert cell("Source") == "https://applink.feishu.cn/client/message/om_7"
    assert cell("Message ID") == row_key(result.job)
    [attached] = cell("Image")
    assert attached["name"] == "om_7-0.png"

    blocks = notion.workspace.blocks(row["id"])
    assert blocks[0]["type"] == "image"
    assert notion.workspace.body_text(row["id"]) == body_lines(LONG_TEXT)
    [upload] = notion.workspace.uploads.values()
    assert upload["status"] == "uploaded" and upload["data"] == png() and upload["content_type"] == "image/png"
    assert upload["attached"] == 2, "the same upload goes into the Image property and the image block"
    # 291 paragraphs + the image: 100 with the page, then two appends.
    assert notion.count("pages.create") == 1
    assert notion.count("blocks.children.append") == 2
    assert {c.version for c in notion.calls} == {"2025-09-03"}


def a_pdf(pages: int = 2) -> bytes:
    out = io.BytesIO()
    sheets = [Image.new("RGB", (300, 400), "white") for _ in range(pages)]
    sheets[0].save(out, "PDF", save_all=True, append_images=sheets[1:])
    return out.getvalue()


def test_a_pdf_goes_up_as_it_is_and_shows_in_a_pdf_block(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    sink = sink_for(notion, database_id, settings, conn)
    result = ocr_result(3, "Invoice 1042\npage two\npage three", resource="file", name="invoice.pdf")
    sink.deliver(result, a_pdf())
    [row] = notion.workspace.rows(source_id)
    [attached] = notion.workspace.cell(row, "Image")
    assert attached["name"] == "om_3-0.pdf"
    blocks = notion.workspace.blocks(row["id"])
    assert blocks[0]["type"] == "pdf" and notion.workspace.body_text(row["id"]) == "Invoice 1042\npage two\npage three"
    [upload] = notion.workspace.uploads.values()
    assert upload["data"] == a_pdf() and upload["content_type"] == "application/pdf"
    # A retry after the page was written counts the body past the PDF block, and adds nothing.
    for key in conn.scan_iter("ocrhub:notion:written:*"):
        conn.delete(key)
    sink.deliver(result, a_pdf())
    assert len(notion.workspace.blocks(row["id"])) == len(blocks) and notion.count("pages.create") == 1


def test_a_pdf_over_the_upload_limit_leaves_a_row_without_it(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    notion.workspace.max_upload_bytes = 100  # a workspace that takes nothing bigger
    sink = sink_for(notion, database_id, settings, conn)
    where = sink.deliver(ocr_result(4, "Invoice 7", resource="file", name="big.pdf"), a_pdf())
    [row] = notion.workspace.rows(source_id)
    assert "PDF not attached" in where and not notion.workspace.cell(row, "Image")
    assert [b["type"] for b in notion.workspace.blocks(row["id"])] == ["paragraph"]


def test_delivering_again_adds_nothing(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    sink = sink_for(notion, database_id, settings, conn)
    first = sink.deliver(ocr_result(1), png())
    assert sink.deliver(ocr_result(1), png()).startswith(first + " (written before")
    # Without the Redis marker (say Redis was flushed), the Message ID look-up finds the row.
    for key in conn.scan_iter("ocrhub:notion:written:*"):
        conn.delete(key)
    sink.deliver(ocr_result(1), png())
    assert len(notion.workspace.rows(source_id)) == 1
    assert notion.count("pages.create") == 1
    assert notion.count("file_uploads.create") == 1


def test_an_image_over_the_workspace_limit_is_downscaled(settings: Settings, conn: redis.Redis) -> None:
    with NotionEmulator(max_upload_bytes=300_000) as notion:
        database_id, source_id = notion.workspace.add_database()
        big = png((1200, 900), noise=True)
        assert len(big) > 3_000_000
        where = sink_for(notion, database_id, settings, conn).deliver(ocr_result(), big)
        [upload] = notion.workspace.uploads.values()
        assert upload["content_type"] == "image/jpeg" and upload["content_length"] <= 300_000
        assert "JPEG" in where and "300000-byte upload limit" in where
        with Image.open(io.BytesIO(upload["data"])) as shrunk:
            assert shrunk.width < 1200 and abs(shrunk.width / shrunk.height - 4 / 3) < 0.01
        [row] = notion.workspace.rows(source_id)
        assert notion.workspace.cell(row, "Image")[0]["name"].endswith(".jpg")


def test_a_format_notion_does_not_show_is_converted(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, _ = notion.workspace.add_database()
    bmp = io.BytesIO()
    Image.new("RGB", (50, 40), "red").save(bmp, "BMP")
    sink_for(notion, database_id, settings, conn).deliver(ocr_result(), bmp.getvalue())
    [upload] = notion.workspace.uploads.values()
    assert upload["content_type"] == "image/png" and upload["data"].startswith(b"\x89PNG")


def test_expired_image_bytes_still_give_the_row(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    where = sink_for(notion, database_id, settings, conn).deliver(ocr_result(), None)
    assert "image not attached" in where
    [row] = notion.workspace.rows(source_id)
    assert "Image" not in row["properties"] and notion.workspace.body_text(row["id"]) == "Weekly report\nrevenue up 12%"


def test_an_unreadable_image_gets_no_row(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    result = OcrResult(job=ocr_result().job, text="", lines=(), engine="rapidocr", image_sha256="0", error="the file is empty")
    assert "could not be read" in sink_for(notion, database_id, settings, conn).deliver(result, b"")
    assert notion.workspace.rows(source_id) == []


def test_columns_named_in_chinese(notion: NotionEmulator, settings: Settings, set_env, conn: redis.Redis) -> None:
    names = {"name": "标题", "text": "内容", "chat": "群", "sender": "发送者", "time": "时间", "image": "图片", "source": "链接", "engine": "", "message_id": "消息ID"}
    types = {"标题": "title", "内容": "rich_text", "群": "select", "发送者": "rich_text", "时间": "date", "图片": "files", "链接": "url", "消息ID": "rich_text"}
    database_id, source_id = notion.workspace.add_database("知识库", types)
    settings = set_env(notion_properties=__import__("json").dumps(names, ensure_ascii=False))
    sink = sink_for(notion, database_id, settings, conn, title="{date} {first_line}")
    sink.deliver(ocr_result(3, "周报\n收入增长"), png())
    [row] = notion.workspace.rows(source_id)
    assert notion.workspace.cell(row, "标题") == "2025-03-04 周报"
    assert notion.workspace.cell(row, "群") == {"name": "oc_team"}
    assert notion.workspace.cell(row, "消息ID") == row_key(ocr_result(3).job)
    assert notion.workspace.body_text(row["id"]) == "周报\n收入增长"


def test_the_title_column_is_found_whatever_it_is_called(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    types = {"Title" if n == "Name" else n: t for n, t in {**dict.fromkeys(FULL, "rich_text"), "Name": "title", "Time": "date", "Image": "files", "Source": "url", "Engine": "select"}.items()}
    database_id, source_id = notion.workspace.add_database(properties=types)
    sink_for(notion, database_id, settings, conn).deliver(ocr_result(), png())
    assert notion.workspace.cell(notion.workspace.rows(source_id)[0], "Title") == "Weekly report"


@pytest.mark.parametrize(
    ("schema", "messages"),
    [
        ({"Name": "title", "Text": "rich_text", "Chat": "rich_text", "Sender": "rich_text", "Image": "files", "Source": "url", "Engine": "select"},
         ["property 'Time' (Date, column time) is missing", "property 'Message ID' (Text, column message_id) is missing", "ocrhub notion init"]),
        ({"Name": "title", "Text": "rich_text", "Chat": "rich_text", "Sender": "people", "Time": "rich_text", "Image": "url", "Source": "url", "Engine": "select", "Message ID": "number"},
         ["property 'Time' is a Text but column time needs Date", "property 'Sender' is a Person but column sender needs Text or Select",
          "property 'Image' is a URL but column image needs Files & media", "property 'Message ID' is a Number", "change its type in Notion"]),
    ],
)
def test_a_schema_that_does_not_fit_is_one_clear_error(schema: dict[str, str], messages: list[str], notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, _ = notion.workspace.add_database(properties=schema)
    sink = sink_for(notion, database_id, settings, conn)
    with pytest.raises(SinkConfigError) as caught:
        sink.check()
    for message in messages:
        assert message in str(caught.value)
    with pytest.raises(PermanentError):
        sink.deliver(ocr_result(), png())
    assert notion.count("pages.create") == 0


def test_a_database_not_shared_with_the_integration(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, _ = notion.workspace.add_database(shared=False)
    with pytest.raises(SinkConfigError, match=r"share it with the integration \(open the database as a full page, ••• → Connections"):
        sink_for(notion, database_id, settings, conn).check()


def test_a_wrong_token(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, _ = notion.workspace.add_database()
    url = notion.sink_url(database_id).replace(notion.token, "ntn_revoked_secret")
    sink = NotionSink.from_url(urlsplit(url), SinkContext(settings, conn))
    with pytest.raises(SinkConfigError, match="refused the integration token .* Internal Integration Secret") as caught:
        sink.check()
    assert "ntn_revoked_secret" not in str(caught.value)


def test_a_data_source_id_pasted_instead_of_the_database_id(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    _, source_id = notion.workspace.add_database()
    sink_for(notion, source_id, settings, conn).deliver(ocr_result(), png())
    assert len(notion.workspace.rows(source_id)) == 1


def test_a_database_with_several_data_sources_needs_a_choice(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, _ = notion.workspace.add_database("Inbox", sources=2)
    with pytest.raises(SinkConfigError, match="data_source=<name or id>"):
        sink_for(notion, database_id, settings, conn).check()
    second = notion.workspace.databases[database_id]["sources"][1]
    sink_for(notion, database_id, settings, conn, data_source="Inbox 2").deliver(ocr_result(), png())
    assert len(notion.workspace.rows(second)) == 1


def test_a_column_removed_after_the_start_names_the_column(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    sink = sink_for(notion, database_id, settings, conn)
    sink.check()
    del notion.workspace.data_sources[source_id]["properties"]["Source"]
    with pytest.raises(SinkConfigError, match="property 'Source' \\(URL, column source\\) is missing"):
        sink.deliver(ocr_result(), png())


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(lambda n: n.fail("pages.create", 500, commit=True), id="500-after-creating"),
        pytest.param(lambda n: n.fail("pages.create", 502, times=2, commit=True), id="502-twice-after-creating"),
        pytest.param(lambda n: n.fail("pages.create", 503), id="503-before-creating"),
        pytest.param(lambda n: n.fail("pages.create", 529, commit=True, retry_after=0), id="529-after-creating"),
        pytest.param(lambda n: n.slow("pages.create", 1.0), id="timeout-after-creating"),
        pytest.param(lambda n: n.slow("pages.create", 1.0, commit=False), id="timeout-before-creating"),
        pytest.param(lambda n: n.fail("blocks.children.append", 500, commit=True), id="append-500-after-appending"),
        pytest.param(lambda n: n.slow("blocks.children.append", 1.0), id="append-timeout-after-appending"),
        pytest.param(lambda n: n.fail("file_uploads.send", 500, commit=True), id="upload-500"),
        pytest.param(lambda n: n.fail("data_sources.query", 500, times=3), id="query-500"),
    ],
)
def test_unanswered_writes_never_duplicate(inject, notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    sink = sink_for(notion, database_id, settings, conn, timeout=0.5)
    inject(notion)
    sink.deliver(ocr_result(1, LONG_TEXT), png())
    [row] = notion.workspace.rows(source_id)
    assert notion.workspace.body_text(row["id"]) == body_lines(LONG_TEXT)
    assert notion.injected >= 1


def test_429_and_529_wait_for_retry_after(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    sink = sink_for(notion, database_id, settings, conn)
    sink.check()
    notion.fail("pages.create", 429, retry_after=1)
    notion.fail("blocks.children.append", 529, retry_after=1, commit=True)
    started = time.monotonic()
    sink.deliver(ocr_result(1, LONG_TEXT), png())
    assert time.monotonic() - started >= 2.0
    [row] = notion.workspace.rows(source_id)
    assert notion.workspace.body_text(row["id"]) == body_lines(LONG_TEXT)
    # A 429 means Notion did nothing: the create is simply sent again, no second look-up.
    assert notion.count("data_sources.query") == 1
    assert notion.count("pages.create") == 2


def test_a_long_retry_after_hands_the_delivery_back_to_the_queue(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, _ = notion.workspace.add_database()
    sink = sink_for(notion, database_id, settings, conn)
    sink.check()
    notion.fail("data_sources.query", 429, retry_after=300)
    started = time.monotonic()
    with pytest.raises(SinkError, match="asked to wait 300 s"):
        sink.deliver(ocr_result(), png())
    assert time.monotonic() - started < 2


def test_a_delivery_cut_short_resumes_the_body(notion: NotionEmulator, settings: Settings, conn: redis.Redis) -> None:
    database_id, source_id = notion.workspace.add_database()
    sink = sink_for(notion, database_id, settings, conn)
    notion.fail("blocks.children.append", 500, times=100)
    with pytest.raises(SinkError, match="resumes where it stopped"):
        sink.deliver(ocr_result(1, LONG_TEXT), png())
    notion.calm()
    sink.deliver(ocr_result(1, LONG_TEXT), png())
    [row] = notion.workspace.rows(source_id)
    assert notion.workspace.body_text(row["id"]) == body_lines(LONG_TEXT)
    assert [b["type"] for b in notion.workspace.blocks(row["id"])].count("image") == 1
