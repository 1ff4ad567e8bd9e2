"""Issue 12's "Done when", end to end with `ocrhub up` (embedded redis-server, the API under uvicorn,
worker processes) against the emulated Feishu: files and PDFs, "read that one", search from the chat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.emulators.feishu import App, FeishuEmulator, chat_id
from tests.hub_process import Hub, running_hub
from tests.imagegen import encode, text_image
from tests.ocr_core.test_pdf import locked, pdf_of

MENTION_BOT = "ou_mention_bot"


def words(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture
def second_app(feishu: FeishuEmulator) -> App:
    return feishu.add_app(encrypt_key="second-encrypt-key-0123456789", verification_token="second-token")


@pytest.fixture
def hub(tmp_path: Path, feishu: FeishuEmulator, app: App, second_app: App) -> Iterator[Hub]:
    # The default bot reads every picture; "quiet" reads only what @-mentions it.
    quiet = {"app_id": second_app.app_id, "app_secret": second_app.app_secret, "encrypt_key": second_app.encrypt_key,
             "verification_token": second_app.verification_token, "group_policy": "mention", "bot_open_id": MENTION_BOT}
    with running_hub(tmp_path, OCRHUB_WORKERS="2", OCRHUB_RETRY_INTERVALS="1,2,4", OCRHUB_FEISHU_BOTS=json.dumps({"quiet": quiet}), **feishu.hub_settings(app)) as running:
        yield running


def test_files_pdfs_read_that_one_and_search_each_get_one_answer(hub: Hub, feishu: FeishuEmulator, app: App, second_app: App):
    events, quiet = feishu.events(app), feishu.events(second_app)
    webhook, quiet_hook = f"{hub.url}/feishu/events", f"{hub.url}/feishu/quiet/events"
    group, elsewhere = chat_id(), chat_id()
    pages = ["invoice 1042 page one", "shipping 7731 page two", "total 1280 page three"]
    png = events.file(group, encode(text_image(["sharp screenshot 3381"], size=44), "PNG"), "screenshot.png")
    three = events.file(group, pdf_of([text_image([t], size=40).convert("RGB") for t in pages]), "invoice.pdf")
    long = events.file(group, pdf_of([Image.new("RGB", (60, 80), "white") for _ in range(500)]), "scan-500.pdf")
    secret = events.file(group, locked(pdf_of([text_image(["private"], size=40).convert("RGB")])), "locked.pdf")
    other = events.image(elsewhere, encode(text_image(["invoice 9999 other group"], size=44), "PNG"))
    for payload in (png, three, long, secret, other, png, three):  # with Feishu's re-sends
        assert events.deliver(webhook, payload).status_code == 200
    feishu.wait_for_replies(5, timeout=180)

    def only_reply(payload: dict) -> str:
        [reply] = feishu.replies_to(payload["event"]["message"]["message_id"])
        return reply.text

    assert words(only_reply(png)) == "sharp screenshot 3381"
    assert only_reply(three).splitlines() == pages
    assert only_reply(long) == "This PDF has too many pages: please send only the pages you need."
    assert only_reply(secret) == "This PDF is protected by a password: please send it without one."

    # "Read that one": the quiet bot ignores a picture until someone replies to it with @bot.
    picture = quiet.image(group, encode(text_image(["pallet 5531 received"], size=44), "PNG"))
    assert quiet.deliver(quiet_hook, picture).json()["status"] == "ignored"
    ask = quiet.text(group, "@_user_1", mentions=(MENTION_BOT,), parent_id=picture["event"]["message"]["message_id"])
    for _ in range(2):
        quiet.deliver(quiet_hook, ask)
    feishu.wait_for_replies(6, timeout=120)
    assert words(only_reply(picture)) == "pallet 5531 received"

    # Search from the chat: this chat's invoice, never the other group's.
    question = events.text(group, "@_user_1 search invoice", mentions=("ou_default_bot",))
    for _ in range(2):
        events.deliver(webhook, question)
    feishu.wait_for_replies(7, timeout=60)
    answer = only_reply(question)
    assert "invoice 1042 page one" in answer and "9999" not in answer and "other group" not in answer
    assert len(feishu.all_replies()) == 7
