"""Asking the bot in words: search this chat's pictures' text, or help — webhook (uvicorn) → Redis →
burst worker → emulated Feishu, each question answered exactly once, never with another chat's text."""

from __future__ import annotations

import pytest

from bots.feishu.commands import Command, parse_command, snippet
from ocrhub.worker import build_worker
from tests.emulators.feishu import chat_id
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
    assert answer.text.startswith("在本群找到 1 条与「harbor」相关的结果")
    assert "harbor window 42" in answer.text.lower() and "secret" not in answer.text.lower()
    assert "ou_sender" in answer.text


def test_nothing_found_and_help_are_answered_in_the_language_asked(webhook, events, feishu, conn, feishu_settings):
    url = f"{webhook}/feishu/events"
    group = chat_id()
    missing = events.text(group, "@_user_1 search zeppelin", mentions=(BOT,))
    helping = events.text(group, "@_user_1 帮助", mentions=(BOT,))
    for payload in (missing, helping):
        assert events.deliver(url, payload).json()["status"] == "queued"
    work(conn, feishu_settings)
    [nothing] = feishu.replies_to(missing["event"]["message"]["message_id"])
    assert nothing.text == "Nothing in this chat's pictures matches \"zeppelin\"."
    [manual] = feishu.replies_to(helping["event"]["message"]["message_id"])
    assert "@我 搜索 关键词" in manual.text


def test_text_that_does_not_mention_the_bot_is_left_alone(webhook, events, feishu, conn, feishu_settings):
    answer = events.deliver(f"{webhook}/feishu/events", events.text(chat_id(), "search harbor"))
    assert answer.json()["status"] == "ignored"
    work(conn, feishu_settings)
    assert feishu.all_replies() == []
