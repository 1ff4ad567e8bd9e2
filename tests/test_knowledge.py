"""Search as chat users ask it: the local store and the Notion databases a chat's results go to,
merged, newest first, and never another chat's text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from ocr_core import store
from ocr_core.job import ImageJob, OcrResult
from ocrhub.knowledge import search_chat
from ocrhub.settings import Settings
from sinks.base import SinkContext
from sinks.local import LocalStore
from sinks.notion import NotionSink
from tests.emulators.notion import NotionEmulator

TEAM, OTHERS = "oc_team", "oc_others"


@pytest.fixture
def notion(settings: Settings) -> Iterator[NotionEmulator]:  # settings: a data folder of the test's own
    with NotionEmulator() as emulator:
        yield emulator


def result(chat: str, n: int, text: str, day: int) -> OcrResult:
    job = ImageJob("feishu", "default", chat, f"om_{chat}_{n}", f"img_{n}", sender=f"ou_{n}", sent_at=f"2026-11-{day:02d}T09:00:00+00:00")
    return OcrResult(job=job, text=text, lines=(), engine="rapidocr", image_sha256=f"{n:064d}")


def to_notion(sink_url: str, settings: Settings, conn: redis.Redis, *results: OcrResult) -> dict[str, str]:
    """job id → the row's link, as the Notion sink writes them."""
    sink = NotionSink.from_url(urlsplit(sink_url), SinkContext(settings, conn))
    return {r.job.job_id: sink.deliver(r, None).split()[2] for r in results}


def to_local(settings: Settings, *results: OcrResult) -> None:
    local = LocalStore(settings.data_dir / "results.sqlite3")
    for r in results:
        local.save(r)


def routed(set_env, notion: NotionEmulator, database_id: str, **options: object) -> Settings:
    kb = notion.sink_url(database_id, **options)
    return set_env(sinks=json.dumps({"kb": kb}), routes=json.dumps({"feishu:*": ["feishu-reply", "local", "kb"]}))


def test_local_and_notion_hits_are_merged_newest_first_and_kept_to_the_chat(notion, set_env, conn):
    database_id, _source = notion.workspace.add_database()
    settings = routed(set_env, notion, database_id)
    both = result(TEAM, 1, "Invoice 42\ntotal 1280.00", 3)  # read lately: in the local store and in Notion
    old = result(TEAM, 2, "INVOICE 7 from the old hub", 1)  # only in Notion (written before the local store was kept)
    local_only = result(TEAM, 3, "invoice 9 kept locally", 2)
    elsewhere = result(OTHERS, 4, "invoice 99 of another group", 4)
    links = to_notion(settings.sinks["kb"], settings, conn, both, old, elsewhere)
    to_local(settings, both, local_only, elsewhere)

    found = search_chat(settings, conn, "feishu", TEAM, "invoice", 10)

    assert found.missed == []
    assert [hit.job_id for hit in found.hits] == [both.job.job_id, local_only.job.job_id, old.job.job_id]
    by_id = {hit.job_id: hit for hit in found.hits}
    assert by_id[both.job.job_id].links == (links[both.job.job_id],), "one hit per image, with its row's link"
    assert by_id[old.job.job_id].text.startswith("INVOICE 7") and by_id[old.job.job_id].sender == "ou_2"
    assert by_id[old.job.job_id].links == (links[old.job.job_id],) and by_id[local_only.job.job_id].links == ()
    assert all("another group" not in hit.text for hit in found.hits)
    assert [h.job_id for h in search_chat(settings, conn, "feishu", TEAM, "invoice", 2).hits] == [both.job.job_id, local_only.job.job_id]


def test_every_word_must_match_in_notion_too(notion, set_env, conn):
    database_id, _source = notion.workspace.add_database()
    settings = routed(set_env, notion, database_id)
    to_notion(settings.sinks["kb"], settings, conn, result(TEAM, 1, "invoice 42 paid", 1), result(TEAM, 2, "invoice 43 open", 2))
    assert [hit.text for hit in search_chat(settings, conn, "feishu", TEAM, "Invoice PAID", 5).hits] == ["invoice 42 paid"]


def test_a_chat_not_routed_to_notion_does_not_search_it(notion, set_env, conn):
    database_id, _source = notion.workspace.add_database()
    settings = routed(set_env, notion, database_id)
    to_notion(settings.sinks["kb"], settings, conn, result(TEAM, 1, "invoice 42", 1))
    settings = set_env(routes=json.dumps({"feishu:*": ["feishu-reply", "local"]}))
    queries = notion.count("data_sources.query")
    assert search_chat(settings, conn, "feishu", TEAM, "invoice", 5).hits == []
    assert notion.count("data_sources.query") == queries


def test_a_database_without_a_chat_column_is_never_searched(notion, set_env, conn):
    database_id, _source = notion.workspace.add_database()
    settings = routed(set_env, notion, database_id, chat="")
    to_notion(settings.sinks["kb"], settings, conn, result(TEAM, 1, "invoice 42", 1))
    assert search_chat(settings, conn, "feishu", TEAM, "invoice", 5).hits == []


def test_notion_down_still_answers_from_the_local_store_and_says_so(notion, set_env, conn):
    database_id, _source = notion.workspace.add_database()
    settings = routed(set_env, notion, database_id, timeout=0.5)
    local = result(TEAM, 1, "invoice 42", 1)
    to_notion(settings.sinks["kb"], settings, conn, local)
    to_local(settings, local)
    notion.fail("data_sources.query", 503, times=20)
    found = search_chat(settings, conn, "feishu", TEAM, "invoice", 5)
    assert [hit.job_id for hit in found.hits] == [local.job.job_id] and found.missed == ["kb"]


def test_only_notion_links_reach_the_chat(notion, set_env, conn):
    database_id, _source = notion.workspace.add_database()
    settings = routed(set_env, notion, database_id)
    settings = set_env(sinks=json.dumps({**settings.sinks, "hook": "local:///tmp/elsewhere.sqlite3"}))
    local = result(TEAM, 1, "invoice 42", 1)
    to_local(settings, local)
    store.note_receipt(conn, local.job.job_id, "hook", "posted to https://hooks.example.com/T0KEN", 60)
    [hit] = search_chat(settings, conn, "feishu", TEAM, "invoice", 5).hits
    assert hit.links == ()
