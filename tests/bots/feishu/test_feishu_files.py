"""Pictures and PDFs sent as files, group chat to reply: webhook (uvicorn) → Redis → burst worker with
real OCR → emulated Feishu, which serves a file's key with type=file only."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from bots.feishu.events import parse_event
from bots.feishu.intake import readable_file
from ocrhub.worker import build_worker
from tests.emulators.feishu import chat_id
from tests.imagegen import encode, text_image
from tests.ocr_core.test_pdf import locked, pdf_of


def work(conn, settings) -> None:  # noqa: ANN001
    build_worker(conn, settings).work(burst=True, with_scheduler=True)


def words(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture
def group() -> str:
    return chat_id()


def test_a_file_message_parses_to_its_file_key_and_name(events, group):
    payload = events.file(group, b"%PDF-1.7", "发票 2024.pdf")
    event = parse_event(payload)
    content = json.loads(payload["event"]["message"]["content"])
    assert (event.message_type, event.image_keys, event.file_name) == ("file", (content["file_key"],), "发票 2024.pdf")


@pytest.mark.parametrize(("name", "readable"), [("scan.PNG", True), ("a.heic", True), ("invoice.pdf", True), ("notes.docx", False), ("", True)])
def test_which_files_are_read(name, readable):
    assert readable_file(name) is readable


def test_a_png_sent_as_a_file_and_a_three_page_pdf_each_get_one_reply(webhook, events, feishu, conn, feishu_settings, group):
    url = f"{webhook}/feishu/events"
    png = events.file(group, encode(text_image(["sharp screenshot 3381"], size=44), "PNG"), "screenshot.png")
    pages = ["invoice 1042 page one", "shipping 7731 page two", "total 1280 page three"]
    three = events.file(group, pdf_of([text_image([t], size=40).convert("RGB") for t in pages]), "invoice.pdf")
    for payload in (png, three, png):
        assert events.deliver(url, payload).status_code == 200
    work(conn, feishu_settings)
    [png_reply] = feishu.replies_to(png["event"]["message"]["message_id"])
    assert words(png_reply.text) == "sharp screenshot 3381"
    [pdf_reply] = feishu.replies_to(three["event"]["message"]["message_id"])
    assert pdf_reply.text.splitlines() == pages


def test_a_long_pdf_and_a_locked_pdf_get_their_clear_replies(webhook, events, feishu, conn, feishu_settings, group):
    url = f"{webhook}/feishu/events"
    long = events.file(group, pdf_of([Image.new("RGB", (60, 80), "white") for _ in range(500)]), "scan-500.pdf")
    secret = events.file(group, locked(pdf_of([text_image(["private"], size=40).convert("RGB")])), "locked.pdf")
    for payload in (long, secret):
        assert events.deliver(url, payload).status_code == 200
    work(conn, feishu_settings)
    [long_reply] = feishu.replies_to(long["event"]["message"]["message_id"])
    assert long_reply.text == "This PDF has too many pages: please send only the pages you need."
    assert "the PDF has 500 pages; at most 20 are read (OCRHUB_MAX_PDF_PAGES)" in json.dumps(long_reply.content)
    [secret_reply] = feishu.replies_to(secret["event"]["message"]["message_id"])
    assert secret_reply.text == "This PDF is protected by a password: please send it without one."


def test_other_files_are_acknowledged_and_not_read(webhook, events, feishu, conn, feishu_settings, group):
    answer = events.deliver(f"{webhook}/feishu/events", events.file(group, b"PK\x03\x04", "notes.docx"))
    assert answer.status_code == 200 and answer.json()["status"] == "ignored"
    work(conn, feishu_settings)
    assert feishu.all_replies() == []
