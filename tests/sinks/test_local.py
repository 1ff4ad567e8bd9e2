"""The local knowledge base: idempotent saves, full-text search in any script, configuration by URL."""

from __future__ import annotations

import pytest

from ocr_core.job import ImageJob, Line, OcrResult
from sinks.base import SinkConfigError, SinkContext, sink_from_url
from sinks.local import LocalSink, LocalStore


def result(message_id: str, text: str, sha: str = "s" * 64, error: str = "") -> OcrResult:
    job = ImageJob(platform="feishu", bot_id="default", chat_id="oc_1", message_id=message_id, image_key="img_1", sender="ou_1")
    lines = tuple(Line(t, ((0, i * 10), (10, i * 10), (10, i * 10 + 8), (0, i * 10 + 8)), 0.9) for i, t in enumerate(text.splitlines()))
    return OcrResult(job=job, text=text, lines=lines, engine="rapidocr", image_sha256=sha, error=error, created_at="2026-11-25T10:00:00+00:00")


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "kb.sqlite3")


def test_saving_twice_keeps_one_row(store):
    sink = LocalSink(store)
    sink.deliver(result("m1", "first reading"), None)
    sink.deliver(result("m1", "corrected reading"), None)
    assert store.count() == 1
    assert store.get(result("m1", "").job.job_id).text == "corrected reading"
    assert store.search("first") == []
    assert [r.text for r in store.search("corrected")] == ["corrected reading"]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("发票金额", ["m2"]),
        ("金额", ["m2"]),  # two characters: below the trigram index, served by LIKE
        ("980.00", ["m2"]),
        ("Agenda", ["m3"]),
        ("agenda", ["m3"]),
        ('"quoted"', ["m3"]),
        ("50%", []),
        ("nothing like it", []),
        ("   ", []),
    ],
)
def test_search(store, query, found):
    store.save(result("m2", "身份证姓名：张三\n发票金额：¥980.00"))
    store.save(result("m3", 'Meeting agenda\nsay "quoted" things'))
    assert [r.message_id for r in store.search(query)] == found


def test_rows_keep_lines_source_and_errors(store):
    store.save(result("m4", "", error="the file is empty"))
    store.save(result("m5", "a\nb"))
    empty = store.get(result("m4", "").job.job_id)
    assert empty.error == "the file is empty" and empty.lines == []
    assert [line["text"] for line in store.get(result("m5", "").job.job_id).lines] == ["a", "b"]
    assert {r.message_id for r in store.by_image("s" * 64)} == {"m4", "m5"}


@pytest.mark.parametrize(
    ("url", "path"),
    [("local://", "data/results.sqlite3"), ("local:///{tmp}/elsewhere.sqlite3", "elsewhere.sqlite3")],
)
def test_configured_by_url(conn, settings, tmp_path, url, path):
    sink = sink_from_url(url.format(tmp=str(tmp_path).lstrip("/")), SinkContext(settings, conn))
    sink.check()
    assert sink.store.path == tmp_path / path


def test_host_in_url_is_refused(conn, settings):
    with pytest.raises(SinkConfigError, match="local:///path"):
        sink_from_url("local://somehost/x.sqlite3", SinkContext(settings, conn))


@pytest.mark.parametrize(
    "query",
    [
        "\x00abc", "abc\x00", "ab\x00cd", "\ud800abc", '"', '""', '"abc', "a OR b", "NEAR(abc def)", "abc*", "*", "^abc", "text:abc",
        "results_fts:abc", "(((", ")", "abc AND", "-abc", "+abc", "{abc}", "[abc]", "'", "%", "_", "\\", "\\%", "x" * 10_000,
        " ".join(["ab"] * 100), "\u200b", "\ufeffabc", "\U0001f600\U0001f600\U0001f600",
    ],
)
def test_any_query_is_safe(store, query):
    store.save(result("m2", 'Meeting agenda\nsay "quoted" things'))
    assert isinstance(store.search(query), list)


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("agenda meeting", ["m3"]),  # every word, in any order
        ("agenda nowhere", []),
        ("say things", ["m3"]),
        ("\x00agenda", ["m3"]),  # NUL is a word break, not part of the word
        ("agenda OR nowhere", []),  # OR is a word to find, not an operator
        ("(quoted)", []),
        ('"quoted" things', ["m3"]),
        ("ag*", []),
        ("s", ["m3"]),  # short words too: LIKE, literally
        ("a_e", []),
        ("金额 发票", ["m2"]),
        ("金 额", ["m2"]),
    ],
)
def test_search_matches_every_word_as_plain_text(store, query, found):
    store.save(result("m2", "身份证姓名：张三\n发票金额：¥980.00"))
    store.save(result("m3", 'Meeting agenda\nsay "quoted" things'))
    assert [r.message_id for r in store.search(query)] == found


def test_search_limit_is_bounded(store):
    for i in range(3):
        store.save(result(f"m{i}", f"row {i} text"))
    assert len(store.search("text", limit=10**30)) == 3
    assert len(store.search("text", limit=-5)) == 1
