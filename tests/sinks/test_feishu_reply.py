"""The feishu-reply sink against the Feishu emulator: exactly one reply per part, limits, reasons, options."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urlsplit

import pytest

from ocr_core.errors import PermanentError
from ocr_core.job import ImageJob, Line, OcrResult
from sinks.base import SinkConfigError, SinkContext, SinkError, sink_from_url
from ocr_core import store
from sinks.feishu_reply import BODY_LIMIT, FeishuReplySink, card_content, reply_parts, split_text, wire_size
from tests.bots.feishu.fixtures import app, events, feishu, feishu_settings  # noqa: F401 - fixtures
from tests.emulators.feishu import chat_id


def result_for(payload: dict, text: str = "hello world", *, error: str = "", index: int = 0, context: str = "") -> OcrResult:
    message = payload["event"]["message"]
    content = json.loads(message["content"])
    key = content.get("image_key") or [e["image_key"] for p in content["content"] for e in p if e["tag"] == "img"][index]
    job = ImageJob("feishu", "default", message["chat_id"], message["message_id"], key, index=index, context=context)
    lines = tuple(Line(t, ((0, 0), (1, 0), (1, 1), (0, 1)), 1.0) for t in text.split("\n") if t)
    return OcrResult(job=job, text=text, lines=lines, engine="test", image_sha256="0" * 64, error=error)


@pytest.fixture
def sink(feishu_settings, conn) -> FeishuReplySink:  # noqa: ANN001
    return FeishuReplySink.from_url(urlsplit("feishu-reply://"), SinkContext(feishu_settings, conn))


@pytest.mark.parametrize(
    "url, thread, shown",
    [
        ("feishu-reply://", None, "feishu-reply://"),
        ("feishu-reply://?thread=1", True, "feishu-reply://?thread=1"),
        ("feishu-reply://?thread=true", True, "feishu-reply://?thread=1"),
        ("feishu-reply://?thread=0", False, "feishu-reply://?thread=0"),
        ("feishu-reply:///?thread=no", False, "feishu-reply://?thread=0"),
    ],
)
def test_urls(url, thread, shown, settings, conn):
    sink = sink_from_url(url, SinkContext(settings, conn))
    assert isinstance(sink, FeishuReplySink)
    assert sink.thread is thread and sink.url() == shown


@pytest.mark.parametrize(
    "url, problem",
    [
        ("feishu-reply://somehost", "no host or path"),
        ("feishu-reply:///a/path", "no host or path"),
        ("feishu-reply://?threads=1", "unknown option(s) threads"),
        ("feishu-reply://?thread=maybe", "thread='maybe'"),
        ("feishu-reply://?format=html", "format='html'"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, problem, settings, conn):
    with pytest.raises(SinkConfigError) as error:
        sink_from_url(url, SinkContext(settings, conn))
    assert problem in str(error.value)


def test_check_needs_a_bot(settings, conn):
    with pytest.raises(SinkConfigError, match="OCRHUB_FEISHU_APP_ID"):
        sink_from_url("feishu-reply://", SinkContext(settings, conn)).check()


def test_reply_with_the_text_in_a_card(sink, events, feishu):
    payload = events.image(chat_id(), b"png")
    where = sink.deliver(result_for(payload, "Total: 42.00\nThank you"), None)
    [reply] = feishu.all_replies()
    assert reply.parent_id == payload["event"]["message"]["message_id"]
    assert reply.msg_type == "interactive" and reply.text == "Total: 42.00\nThank you"
    assert reply.content["header"]["title"]["content"] == "Text read"
    assert reply.in_thread is False and reply.message_id in where


def test_plain_text_replies_by_setting_or_option(feishu_settings, set_env, conn, events, feishu):
    by_option = FeishuReplySink.from_url(urlsplit("feishu-reply://?format=text"), SinkContext(feishu_settings, conn))
    by_setting = FeishuReplySink.from_url(urlsplit("feishu-reply://"), SinkContext(set_env(feishu_reply_format="text"), conn))
    for sink in (by_option, by_setting):
        sink.deliver(result_for(events.image(chat_id(), b"png"), "Total: 42.00"), None)
    assert [(r.msg_type, r.text) for r in feishu.all_replies()] == [("text", "Total: 42.00")] * 2
    assert by_option.url() == "feishu-reply://?format=text"


def test_a_long_text_shows_a_preview_and_the_whole_in_a_closed_panel(sink, events, feishu):
    from dataclasses import replace

    text = "\n".join(f"line {n} of the scanned contract" for n in range(40))
    result = replace(result_for(events.image(chat_id(), b"png"), text), engine="rapidocr", timings={"fetch": 0.2, "recognise": 1.1})
    sink.deliver(result, None)
    [reply] = feishu.all_replies()
    elements = reply.content["body"]["elements"]
    assert [e["tag"] for e in elements] == ["div", "collapsible_panel", "div"]
    assert elements[0]["text"]["content"].count("\n") == 8 and elements[1]["expanded"] is False
    assert reply.text == text and elements[2]["text"]["content"] == "rapidocr · 1.3 s"


def test_a_card_past_feishus_30_kb_is_split_into_numbered_cards(sink, events, feishu):
    text = "\n".join("发票明细第{}行 金额 1280.00 元".format(n) for n in range(1500))
    sink.deliver(result_for(events.image(chat_id(), b"png"), text), None)
    replies = feishu.all_replies()
    assert len(replies) > 1 and all(r.body_bytes <= 30 * 1024 for r in replies)
    assert "\n".join(r.text.split("\n", 1)[1] for r in replies) == text


def test_a_retried_delivery_never_posts_twice(sink, events, feishu, conn):
    result = result_for(events.image(chat_id(), b"png"))
    sink.deliver(result, None)
    sink.deliver(result, None)
    assert len(feishu.all_replies()) == 1
    # Even with Redis's memory of it gone, Feishu drops the repeat by its uuid.
    for key in conn.keys("ocrhub:feishu:replied:*"):
        conn.delete(key)
    sink.deliver(result, None)
    assert len(feishu.all_replies()) == 1 and feishu.count("reply_deduplicated") == 1
    assert feishu.all_replies()[0].uuid.startswith(result.job.job_id) and len(feishu.all_replies()[0].uuid) <= 50


ROW = "https://www.notion.so/0123456789abcdef0123456789abcdef"
KB = json.dumps({"kb": "notion://secret_token@0123456789abcdef0123456789abcdef", "hook": "local:///tmp/kb.sqlite3"})


@pytest.fixture
def with_kb(set_env, feishu_settings):  # noqa: ANN001, ANN201
    """Settings with a Notion sink "kb" (its links shown in the chat) and another sink "hook"."""
    return set_env(sinks=KB)


@pytest.fixture
def linking(with_kb, conn) -> FeishuReplySink:  # noqa: ANN001
    return FeishuReplySink.from_url(urlsplit("feishu-reply://"), SinkContext(with_kb, conn))


def test_a_card_links_the_notion_row_written_before_it(linking, events, feishu, conn):
    result = result_for(events.image(chat_id(), b"png"))
    store.note_receipt(conn, result.job.job_id, "kb", f"notion page {ROW}", 60)
    store.note_receipt(conn, result.job.job_id, "local", "local store row 7", 60)
    linking.deliver(result, None)
    [reply] = feishu.all_replies()
    assert reply.links == [ROW] and "Open in Notion" in json.dumps(reply.content)
    linking.amend(result)
    assert feishu.count("update") == 0, "nothing changed, nothing sent"


def test_a_row_written_after_the_reply_is_added_to_the_posted_cards(linking, events, feishu, conn):
    sink = linking
    text = "\n".join(f"发票明细第{n}行 金额 1280.00 元" for n in range(1500))
    result = result_for(events.image(chat_id(), b"png"), text)
    sink.amend(result)  # before the reply: nothing to update yet
    sink.deliver(result, None)
    cards = feishu.all_replies()
    assert len(cards) > 1 and all(r.links == [] for r in cards)
    store.note_receipt(conn, result.job.job_id, "kb", f"notion page {ROW}", 60)
    sink.amend(result)
    sink.amend(result)
    updated = feishu.all_replies()
    assert [r.message_id for r in updated] == [r.message_id for r in cards], "updated in place, nothing new posted"
    assert all(r.links == [ROW] and len(r.updates) == 1 and r.text == c.text for r, c in zip(updated, cards))
    assert feishu.count("update") == len(cards)


def test_a_card_links_in_the_bots_language_and_only_notion_rows(with_kb, set_env, conn, events, feishu):
    zh = set_env(feishu_language="zh")
    result = result_for(events.image(chat_id(), b"png"))
    store.note_receipt(conn, result.job.job_id, "kb", f"notion page {ROW}", 60)
    # Another sink's receipt may hold a private URL (a webhook's): never shown in the chat.
    store.note_receipt(conn, result.job.job_id, "hook", "posted to https://hooks.example.com/T0KEN", 60)
    store.note_receipt(conn, result.job.job_id, "gone", "notion page https://www.notion.so/ffff", 60)  # a sink since removed
    FeishuReplySink.from_url(urlsplit("feishu-reply://"), SinkContext(zh, conn)).deliver(result, None)
    [reply] = feishu.all_replies()
    assert reply.links == [ROW] and "T0KEN" not in json.dumps(reply.content)
    assert "在 Notion 中打开" in json.dumps(reply.content, ensure_ascii=False)


def test_plain_text_replies_are_never_updated(with_kb, conn, events, feishu):
    sink = FeishuReplySink.from_url(urlsplit("feishu-reply://?format=text"), SinkContext(with_kb, conn))
    result = result_for(events.image(chat_id(), b"png"))
    sink.deliver(result, None)
    store.note_receipt(conn, result.job.job_id, "kb", f"notion page {ROW}", 60)
    sink.amend(result)
    assert feishu.count("update") == 0 and feishu.all_replies()[0].text == "hello world"


def test_the_emulator_updates_only_shared_cards_of_the_same_app(sink, events, feishu, conn):
    from bots.feishu.api import FeishuPermanentError, api_for
    from bots.feishu.bots import bot_in_force

    result = result_for(events.image(chat_id(), b"png"))
    sink.deliver(result, None)
    [reply] = feishu.all_replies()
    api = api_for(bot_in_force(sink.context.settings, conn, "default"), conn)
    unshared = json.loads(card_content(result, "x"))
    unshared["config"]["update_multi"] = False
    with pytest.raises(FeishuPermanentError, match="update_multi"):
        api.update_card(reply.message_id, json.dumps(unshared))
    with pytest.raises(FeishuPermanentError, match="invalid message_id"):
        api.update_card(result.job.message_id, card_content(result, "x"))


def test_unreadable_image_gets_one_friendly_sentence_and_the_reason_in_small_print(sink, events, feishu):
    from dataclasses import replace

    error = "not an image: the bytes are a ZIP archive " + "x" * 1000
    sink.deliver(replace(result_for(events.image(chat_id(), b"png"), "", error=error), error_kind="not_an_image"), None)
    [reply] = feishu.all_replies()
    assert reply.text == "This is not a picture: I read pictures, screenshots and PDFs."
    small_print = reply.content["body"]["elements"][-1]["text"]["content"]
    assert small_print.startswith("not an image: the bytes are a ZIP archive") and len(small_print) <= 300


@pytest.mark.parametrize(
    ("kind", "zh", "en"),
    [
        ("pdf_too_long", "这个 PDF 页数太多了，请只发需要的几页。", "This PDF has too many pages: please send only the pages you need."),
        ("pdf_locked", "这个 PDF 设了密码，请发送没有密码的版本。", "This PDF is protected by a password: please send it without one."),
        ("too_large", "这张图片太大了，请压缩后再发。", "This picture is too large: please send a smaller one."),
        ("", "抱歉，这张图片没能识别。", "Sorry, this picture could not be read."),
    ],
)
def test_failures_are_said_in_the_bots_language(kind, zh, en, set_env, feishu_settings, conn, events, feishu):
    from dataclasses import replace

    for language in ("zh", "en"):
        sink = FeishuReplySink.from_url(urlsplit("feishu-reply://?format=text"), SinkContext(set_env(feishu_language=language), conn))
        sink.deliver(replace(result_for(events.image(chat_id(), b"png"), "", error="technical reason"), error_kind=kind), None)
    assert [r.text for r in feishu.all_replies()] == [zh, en]


def test_no_text_says_so(sink, events, feishu):
    sink.deliver(result_for(events.image(chat_id(), b"png"), ""), None)
    assert feishu.all_replies()[0].text == "No text found in this picture."


def test_images_of_a_post_are_labelled(sink, events, feishu):
    payload = events.post(chat_id(), ["two receipts", b"a", b"b"])
    sink.deliver(result_for(payload, "first", index=0, context="two receipts"), None)
    sink.deliver(result_for(payload, "second", index=1, context="two receipts"), None)
    assert [r.text for r in feishu.all_replies()] == ["Image 1:\nfirst", "Image 2:\nsecond"]


def test_reply_in_thread_by_url_or_setting(feishu_settings, conn, events, feishu, set_env):
    threaded = FeishuReplySink.from_url(urlsplit("feishu-reply://?thread=1"), SinkContext(feishu_settings, conn))
    threaded.deliver(result_for(events.image(chat_id(), b"png")), None)
    by_setting = FeishuReplySink.from_url(urlsplit("feishu-reply://"), SinkContext(set_env(feishu_reply_in_thread="true"), conn))
    by_setting.deliver(result_for(events.image(chat_id(), b"png")), None)
    assert [r.in_thread for r in feishu.all_replies()] == [True, True]


def test_long_text_is_split_under_feishus_limit(sink, events, feishu):
    lines = [f"line {i:05d} 中文字符 \"quoted\" \\ back" for i in range(9000)]
    text = "\n".join(lines)
    sink.deliver(result_for(events.image(chat_id(), b"png"), text), None)
    replies = feishu.all_replies()
    assert len(replies) >= 3
    assert all(r.body_bytes <= 150 * 1024 for r in replies)
    assert replies[0].text.startswith(f"(1/{len(replies)})\n")
    rebuilt = "\n".join(r.text.split("\n", 1)[1] for r in replies)
    assert rebuilt == text


def test_split_text_cuts_an_endless_line():
    pieces = split_text("x" * 1000, 300)
    assert "".join(pieces) == "x" * 1000 and all(wire_size(p) <= 300 for p in pieces)


def test_reply_parts_fit_the_budget():
    job = ImageJob("feishu", "default", "oc", "om", "img")
    result = OcrResult(job=job, text="字" * 200_000, lines=(), engine="t", image_sha256="")
    parts = list(reply_parts(result))
    assert all(wire_size(p) <= BODY_LIMIT for p in parts) and len(parts) > 1


def test_rate_limited_reply_is_retried_after_the_reset(sink, events, feishu):
    feishu.throttle("reply", 1)
    sink.deliver(result_for(events.image(chat_id(), b"png")), None)
    assert len(feishu.all_replies()) == 1 and feishu.count("rate_limited_reply") == 1


def test_a_long_rate_limit_becomes_a_retryable_sink_error(sink, events, feishu):
    feishu.reset_after = 3600
    feishu.throttle("reply", 1)
    with pytest.raises(SinkError, match="rate limit"):
        sink.deliver(result_for(events.image(chat_id(), b"png")), None)


def test_a_chat_booked_beyond_the_wait_is_a_retryable_sink_error(sink, events, feishu, conn):
    result = result_for(events.image(chat_id(), b"png"))
    # The key a running deployment already holds: five slots that free up only in an hour.
    key = f"ocrhub:feishu:rate:{result.job.bot_id}:{result.job.chat_id}"
    later = int(time.time() * 1_000_000) + 3600 * 1_000_000
    conn.zadd(key, {f"slot{i}": later for i in range(5)})
    with pytest.raises(SinkError, match=f"Feishu chat {result.job.chat_id} is busy: more than 5 messages per 1.2 s queued for default:"):
        sink.deliver(result, None)
    assert feishu.all_replies() == []


def test_at_most_five_messages_a_second_per_chat_across_workers(feishu_settings, conn, events, feishu, redis_server):
    import redis

    chat = chat_id()
    results = [result_for(events.image(chat, b"png"), f"text {i}") for i in range(12)]

    def worker(part: list[OcrResult]) -> None:
        # Each thread its own Redis connection and sink, as separate worker processes have.
        own = FeishuReplySink(SinkContext(feishu_settings, redis.Redis.from_url(redis_server.url)))
        for result in part:
            own.deliver(result, None)

    threads = [threading.Thread(target=worker, args=(results[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    replies = feishu.all_replies()
    assert len(replies) == 12 and feishu.count("rate_limited_reply") == 0
    times = sorted(r.at for r in replies)
    assert all(times[i + 5] - times[i] >= 0.9 for i in range(len(times) - 5))


def test_only_feishu_jobs(sink):
    job = ImageJob("upload", "cli", "cli", "m", "k")
    with pytest.raises(SinkConfigError, match="only answer Feishu messages"):
        sink.deliver(OcrResult(job=job, text="x", lines=(), engine="t", image_sha256=""), None)


def test_a_recalled_message_is_permanent(sink, feishu):
    job = ImageJob("feishu", "default", "oc_x", "om_gone", "img")
    with pytest.raises(PermanentError):
        sink.deliver(OcrResult(job=job, text="x", lines=(), engine="t", image_sha256=""), None)
    assert feishu.all_replies() == []
