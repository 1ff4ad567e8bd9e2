"""Asking the bot in words: search this chat's pictures' text, or help — webhook (uvicorn) → Redis →
burst worker → emulated Feishu, each question answered exactly once, never with another chat's text."""

from __future__ import annotations

import json

import pytest

from bots.feishu.commands import Command, parse_command, snippet
from ocrhub.worker import build_worker
from tests.emulators.feishu import chat_id
from tests.emulators.notion import NotionEmulator
from tests.imagegen import encode, text_image

BOT = "ou_the_bot"


def work(conn, settings) -> None:  # noqa: ANN001
    build_worker(conn, settings).work(burst=True, with_scheduler=True)


def picture(*lines: str) -> bytes:
    return encode(text_image(list(lines), size=44), "PNG")


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("@_user_1 搜索 发票", Command("search", "发票", "zh")),
        ("@_user_1 搜索发票 2024", Command("search", "发票 2024", "zh")),
        ("@_user_1 search invoice 42", Command("search", "invoice 42", "en")),
        ("@_user_1 Search: invoice", Command("search", "invoice", "en")),
        ("@_user_1 help", Command("help", "", "en")),
        ("@_user_1 帮助", Command("help", "", "zh")),
        ("@_user_1", Command("help", "", "en")),
        ("@_user_1 搜索", Command("help", "", "zh")),
        ("@_user_1 searching for nothing", None),
        ("@_user_1 thanks!", None),
    ],
)
def test_commands_are_read_from_the_text(text, command):
    assert parse_command(text) == command


def test_a_snippet_is_the_line_with_the_word_cut_around_it():
    text = "header line\n" + "x" * 100 + " invoice 2024 total " + "y" * 100 + "\nfooter"
    cut = snippet(text, "invoice")
    assert "invoice 2024 total" in cut and cut.startswith("…") and cut.endswith("…") and len(cut) <= 82


def test_search_answers_from_this_chat_only_and_once(webhook, events, feishu, conn, feishu_settings):
    url = f"{webhook}/feishu/events"
    ours, theirs = chat_id(), chat_id()
    events.deliver(url, events.image(ours, picture("harbor window 42")))
    events.deliver(url, events.image(theirs, picture("harbor secret 99")))
    work(conn, feishu_settings)
    question = events.text(ours, "@_user_1 搜索 harbor", mentions=(BOT,))
    for _ in range(3):  # Feishu re-sends
        assert events.deliver(url, question).json()["status"] in ("queued", "duplicate")
    work(conn, feishu_settings)
    [answer] = feishu.replies_to(question["event"]["message"]["message_id"])
    assert answer.msg_type == "interactive" and answer.text.startswith("在本群找到 1 条与「harbor」相关的结果")
    assert "harbor window 42" in answer.text.lower() and "secret" not in answer.text.lower()
    assert answer.persons == ["ou_sender"], "the sender shown by name, not pinged"


def test_search_answers_in_plain_text_by_setting(webhook, events, feishu, conn, feishu_settings, set_env):
    settings = set_env(feishu_reply_format="text")
    url = f"{webhook}/feishu/events"
    group = chat_id()
    events.deliver(url, events.image(group, picture("harbor window 42")))
    work(conn, settings)
    question = events.text(group, "@_user_1 search harbor", mentions=(BOT,))
    events.deliver(url, question)
    work(conn, settings)
    [answer] = feishu.replies_to(question["event"]["message"]["message_id"])
    assert answer.msg_type == "text" and answer.text.startswith('1 match(es) for "harbor" in this chat:')
    assert "harbor window 42" in answer.text.lower() and "ou_sender" in answer.text


def test_search_finds_the_notion_rows_of_this_chat_and_links_them(webhook, events, feishu, conn, feishu_settings, set_env):
    with NotionEmulator() as notion:
        database_id, source_id = notion.workspace.add_database()
        # No local store: the team keeps its knowledge base in Notion only.
        settings = set_env(sinks=json.dumps({"kb": notion.sink_url(database_id)}), routes=json.dumps({"feishu:*": ["feishu-reply", "kb"]}))
        url = f"{webhook}/feishu/events"
        ours, theirs = chat_id(), chat_id()
        posted = events.image(ours, picture("harbor window 42"))
        for payload in (posted, events.image(theirs, picture("harbor secret 99"))):
            events.deliver(url, payload)
        work(conn, settings)
        rows = {notion.workspace.cell(row, "Chat"): f"https://www.notion.so/{row['id'].replace('-', '')}" for row in notion.workspace.rows(source_id)}
        [card] = feishu.replies_to(posted["event"]["message"]["message_id"])
        assert card.links == [rows[ours]], "the card links the row written for it"
        question = events.text(ours, "@_user_1 search HARBOR", mentions=(BOT,))
        events.deliver(url, question)
        work(conn, settings)
    [answer] = feishu.replies_to(question["event"]["message"]["message_id"])
    assert answer.text.startswith('1 match(es) for "HARBOR" in this chat:')
    assert "harbor window 42" in answer.text.lower() and answer.links == [rows[ours]]
    assert "secret" not in answer.text.lower()


def test_nothing_found_and_help_are_answered_in_the_language_asked(webhook, events, feishu, conn, feishu_settings):
    url = f"{webhook}/feishu/events"
    group = chat_id()
    missing = events.text(group, "@_user_1 search zeppelin", mentions=(BOT,))
    helping = events.text(group, "@_user_1 帮助", mentions=(BOT,))
    for payload in (missing, helping):
        assert events.deliver(url, payload).json()["status"] == "queued"
    work(conn, feishu_settings)
    [nothing] = feishu.replies_to(missing["event"]["message"]["message_id"])
    assert nothing.text == "Nothing in this chat's pictures matches \"zeppelin\".\nTry other words."
    [manual] = feishu.replies_to(helping["event"]["message"]["message_id"])
    assert "@我 搜索 关键词" in manual.text


def test_text_that_does_not_mention_the_bot_is_left_alone(webhook, events, feishu, conn, feishu_settings):
    answer = events.deliver(f"{webhook}/feishu/events", events.text(chat_id(), "search harbor"))
    assert answer.json()["status"] == "ignored"
    work(conn, feishu_settings)
    assert feishu.all_replies() == []


@pytest.fixture
def mention_only(feishu_settings, set_env, conn):  # noqa: ANN001, ANN201
    """A bot that reads only what @-mentions it, served on uvicorn: (its webhook URL, its settings)."""
    from fastapi import FastAPI

    from bots.feishu.webhook import build_router
    from tests.bots.feishu.fixtures import serve

    settings = set_env(feishu_group_policy="mention", feishu_bot_open_id=BOT)
    api = FastAPI()
    api.include_router(build_router(settings, conn))
    with serve(api) as served:
        yield f"{served.url}/feishu/events", settings


def test_replying_to_a_picture_with_a_mention_reads_that_picture_once(mention_only, events, feishu, conn):
    url, settings = mention_only
    group = chat_id()
    image = events.image(group, picture("pallet 5531 received"))
    assert events.deliver(url, image).json()["status"] == "ignored"  # no mention: not read
    ask = events.text(group, "@_user_1", mentions=(BOT,), parent_id=image["event"]["message"]["message_id"])
    for _ in range(2):
        assert events.deliver(url, ask).json()["status"] in ("queued", "duplicate")
    work(conn, settings)
    [reply] = feishu.replies_to(image["event"]["message"]["message_id"])
    assert " ".join(reply.text.lower().split()) == "pallet 5531 received"
    assert feishu.replies_to(ask["event"]["message"]["message_id"]) == []  # the answer is under the picture
    again = events.text(group, "@_user_1 read this", mentions=(BOT,), parent_id=image["event"]["message"]["message_id"])
    assert events.deliver(url, again).json()["status"] == "queued"
    work(conn, settings)
    assert len(feishu.replies_to(image["event"]["message"]["message_id"])) == 1
    [told] = feishu.replies_to(again["event"]["message"]["message_id"])
    assert told.text == "That one has been read already: its text is in the reply under it."


def test_replying_to_a_message_without_a_picture_says_so(mention_only, events, feishu, conn):
    url, settings = mention_only
    group = chat_id()
    words_only = events.text(group, "meeting at 3")
    ask = events.text(group, "@_user_1 识别一下", mentions=(BOT,), parent_id=words_only["event"]["message"]["message_id"])
    assert events.deliver(url, ask).json()["status"] == "queued"
    work(conn, settings)
    [told] = feishu.replies_to(ask["event"]["message"]["message_id"])
    assert told.text == "回复的那条消息里没有可识别的图片或文件。"


def test_without_the_group_msg_scope_the_asker_is_told_which_scope_to_grant(mention_only, events, feishu, conn, app):
    url, settings = mention_only
    feishu.grant_group_msg(app.app_id, False)
    group = chat_id()
    picture_message = events.image(group, picture("harbor window 42"))
    ask = events.text(group, "@_user_1 read this", mentions=(BOT,), parent_id=picture_message["event"]["message"]["message_id"])
    assert events.deliver(url, ask).json()["status"] == "queued"
    work(conn, settings)
    [told] = feishu.replies_to(ask["event"]["message"]["message_id"])
    assert "im:message.group_msg" in told.text and told.text.startswith("I cannot open earlier messages")
    assert feishu.replies_to(picture_message["event"]["message"]["message_id"]) == []
