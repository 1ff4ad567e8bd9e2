"""The knowledge base as chat users search it: the local store's text of one chat, with where else
each text went (the Notion row), newest first."""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis

from ocr_core.store import receipts
from ocrhub.settings import Settings
from sinks.local import LocalStore

_URL = re.compile(r"https://[^\s()]+")


@dataclass(frozen=True)
class Hit:
    job_id: str
    text: str
    sender: str
    sent_at: str
    links: tuple[str, ...]  # e.g. the Notion row the text went to


def search_chat(settings: Settings, conn: redis.Redis, platform: str, chat_id: str, query: str, limit: int) -> list[Hit]:
    """Matches for `query` among the texts read in `chat_id` only: never another chat's."""
    store = LocalStore(settings.data_dir / "results.sqlite3")
    rows = store.search(query, limit=limit, platform=platform, chat_id=chat_id)
    delivered = receipts(conn, [row.job_id for row in rows])
    return [Hit(row.job_id, row.text, row.sender, row.sent_at, tuple(link for _sink, link in links_of(delivered.get(row.job_id, {})))) for row in rows]


def links_of(receipts_by_sink: dict[str, str]) -> list[tuple[str, str]]:
    """(sink, link) for each receipt that carries an https link."""
    found = []
    for sink, receipt in sorted(receipts_by_sink.items()):
        match = _URL.search(receipt)
        if match:
            found.append((sink, match.group(0)))
    return found
