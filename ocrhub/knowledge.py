"""The knowledge base as chat users search it: the text read in one chat, from the local store and
from every Notion database the chat's results are routed to, with where else each text went (the
Notion row), newest first. Never another chat's text: each place is asked for this chat's rows only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import redis

from ocr_core.errors import PermanentError, TransientError
from ocr_core.job import ImageJob
from ocr_core.routes import sinks_for
from ocr_core.store import receipts
from ocrhub.live_config import live_settings
from ocrhub.settings import Settings
from sinks.base import SinkConfigError, SinkContext, chat_links, get_sink
from sinks.local import LocalStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    job_id: str
    text: str
    sender: str
    sent_at: str
    links: tuple[str, ...]  # e.g. the Notion row the text went to


@dataclass(frozen=True)
class Found:
    hits: list[Hit]
    missed: list[str] = field(default_factory=list)  # places that could not be searched just now


def search_chat(settings: Settings, conn: redis.Redis, platform: str, chat_id: str, query: str, limit: int, bot_id: str = "default") -> Found:
    """Matches for `query` among the texts read in `chat_id` only."""
    store = LocalStore(settings.data_dir / "results.sqlite3")
    rows = store.search(query, limit=limit, platform=platform, chat_id=chat_id)
    delivered = receipts(conn, [row.job_id for row in rows])
    live = live_settings(settings, conn)
    hits = {row.job_id: Hit(row.job_id, row.text, row.sender, row.sent_at, tuple(chat_links(delivered.get(row.job_id, {}), live))) for row in rows}
    missed = []
    for name, sink in _searchable(live, conn, platform, bot_id, chat_id):
        try:
            found = sink.search_chat(chat_id, query, limit)
        except (TransientError, PermanentError) as exc:
            log.warning("search in sink %r for chat %s failed: %s", name, chat_id, exc)
            missed.append(name)
            continue
        for row in found:
            known = hits.get(row.job_id)
            if known is None:
                hits[row.job_id] = Hit(row.job_id, row.text, row.sender, row.sent_at, (row.url,) if row.url else ())
            elif row.url and row.url not in known.links:
                hits[row.job_id] = replace(known, links=(*known.links, row.url))
    newest = sorted(hits.values(), key=lambda hit: hit.sent_at, reverse=True)
    return Found(newest[:limit], missed)


def _searchable(live: Settings, conn: redis.Redis, platform: str, bot_id: str, chat_id: str) -> list[tuple[str, object]]:
    """The sinks this chat's results go to that can search them (Notion databases), by name; `live`:
    the settings with the sinks and routes in force now."""
    context = SinkContext(live, conn)
    found = []
    for name in sinks_for(ImageJob(platform, bot_id, chat_id, "", ""), live.routes):
        try:
            sink = get_sink(name, context)
        except SinkConfigError:
            continue
        if hasattr(sink, "search_chat"):
            found.append((name, sink))
    return found
