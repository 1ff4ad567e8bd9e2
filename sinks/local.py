"""The embedded default sink: every result in a SQLite file with full-text search, findable later.

`local://` keeps `results.sqlite3` under the data folder; `local:///path/to/file.sqlite3` elsewhere.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import SplitResult, unquote

from PIL import Image

from ocr_core.image import normalise
from ocr_core.job import OcrResult
from ocr_core.pdf import is_pdf
from ocr_core.pdf import pages as pdf_pages
from ocrhub.settings import Settings
from sinks.base import SinkConfigError, SinkContext

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    image_sha256 TEXT NOT NULL,
    platform TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    source_url TEXT NOT NULL,
    engine TEXT NOT NULL,
    text TEXT NOT NULL,
    lines TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_sha ON results(image_sha256);
CREATE TABLE IF NOT EXISTS thumbnails (
    image_sha256 TEXT PRIMARY KEY,
    jpeg BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS results_chat ON results(chat_id, created_at);
CREATE VIRTUAL TABLE IF NOT EXISTS results_fts USING fts5(
    text, content='results', content_rowid='id', tokenize='trigram'
);
CREATE TRIGGER IF NOT EXISTS results_ai AFTER INSERT ON results BEGIN
    INSERT INTO results_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS results_ad AFTER DELETE ON results BEGIN
    INSERT INTO results_fts(results_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER IF NOT EXISTS results_au AFTER UPDATE ON results BEGIN
    INSERT INTO results_fts(results_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO results_fts(rowid, text) VALUES (new.id, new.text);
END;
"""

# Bounds that keep one search cheap whatever is asked: rows returned, words matched.
MAX_SEARCH_LIMIT = 200
MAX_SEARCH_WORDS = 16
# Thumbnails the admin page shows beside search hits: small enough for a list on a phone.
THUMBNAIL_SIDE = 240

COLUMNS = "job_id, image_sha256, platform, bot_id, chat_id, message_id, sender, sent_at, source_url, engine, text, lines, error, created_at"


@dataclass(frozen=True)
class StoredResult:
    job_id: str
    image_sha256: str
    platform: str
    bot_id: str
    chat_id: str
    message_id: str
    sender: str
    sent_at: str
    source_url: str
    engine: str
    text: str
    lines: list
    error: str
    created_at: str


class LocalStore:
    """A SQLite file shared safely by several worker processes (WAL, busy timeout)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def save(self, result: OcrResult) -> int:
        job = result.job
        row = (
            job.job_id, result.image_sha256, job.platform, job.bot_id, job.chat_id, job.message_id, job.sender,
            job.sent_at, job.source_url, result.engine, result.text,
            json.dumps([line.to_dict() for line in result.lines], ensure_ascii=False), result.error, result.created_at,
        )
        db = self._connect()
        db.execute(
            f"INSERT INTO results ({COLUMNS}) VALUES ({', '.join('?' * 14)}) "
            "ON CONFLICT(job_id) DO UPDATE SET image_sha256=excluded.image_sha256, engine=excluded.engine, "
            "text=excluded.text, lines=excluded.lines, error=excluded.error, created_at=excluded.created_at",
            row,
        )
        return db.execute("SELECT id FROM results WHERE job_id = ?", (job.job_id,)).fetchone()[0]

    def get(self, job_id: str) -> StoredResult | None:
        row = self._connect().execute(f"SELECT {COLUMNS} FROM results WHERE job_id = ?", (job_id,)).fetchone()
        return _stored(row) if row else None

    def by_image(self, image_sha256: str) -> list[StoredResult]:
        rows = self._connect().execute(f"SELECT {COLUMNS} FROM results WHERE image_sha256 = ? ORDER BY id", (image_sha256,))
        return [_stored(r) for r in rows]

    def save_thumbnail(self, image_sha256: str, image: Image.Image) -> None:
        """Keep a small JPEG of the image (at most THUMBNAIL_SIDE pixels a side), for the admin page."""
        small = image.convert("RGB")
        small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        out = io.BytesIO()
        small.save(out, "JPEG", quality=75)
        self._connect().execute("INSERT OR REPLACE INTO thumbnails (image_sha256, jpeg) VALUES (?, ?)", (image_sha256, out.getvalue()))

    def thumbnail(self, image_sha256: str) -> bytes | None:
        row = self._connect().execute("SELECT jpeg FROM thumbnails WHERE image_sha256 = ?", (image_sha256,)).fetchone()
        return row[0] if row else None

    def search(self, query: str, limit: int = 20, *, platform: str = "", chat_id: str = "") -> list[StoredResult]:
        """Rows containing every word of `query`, newest first (of one chat's, when `chat_id` is
        given). Any string is a safe query: words are matched as literal substrings, never read as
        FTS syntax."""
        words = search_words(query)
        if not words:
            return []
        # The trigram index serves words of three characters or more; shorter ones are checked by LIKE.
        indexed = [w for w in words if len(w) >= 3]
        short = [w for w in words if len(w) < 3]
        conditions = ["r.text LIKE ? ESCAPE '\\'"] * len(short)
        args: list[object] = [f"%{_like_escaped(w)}%" for w in short]
        for column, value in (("platform", platform), ("chat_id", chat_id)):
            if value:
                conditions.append(f"r.{column} = ?")
                args.append(value)
        where = " AND ".join(conditions) or "1"
        limit = max(1, min(int(limit), MAX_SEARCH_LIMIT))
        columns = ", ".join("r." + c.strip() for c in COLUMNS.split(","))
        if indexed:
            rows = self._connect().execute(
                f"SELECT {columns} FROM results_fts f JOIN results r ON r.id = f.rowid "
                f"WHERE results_fts MATCH ? AND {where} ORDER BY r.id DESC LIMIT ?",
                (fts_query(indexed), *args, limit),
            )
        else:
            rows = self._connect().execute(f"SELECT {columns} FROM results r WHERE {where} ORDER BY r.id DESC LIMIT ?", (*args, limit))
        return [_stored(r) for r in rows]

    def recent(self, limit: int = 20) -> list[StoredResult]:
        rows = self._connect().execute(f"SELECT {COLUMNS} FROM results ORDER BY id DESC LIMIT ?", (max(1, int(limit)),))
        return [_stored(r) for r in rows]

    def count(self) -> int:
        return self._connect().execute("SELECT count(*) FROM results").fetchone()[0]


def search_words(query: str) -> list[str]:
    """The words of a query: split at whitespace and at characters no text holds (NUL and other
    control characters, lone surrogates), at most MAX_SEARCH_WORDS of them."""
    cleaned = "".join(" " if unicodedata.category(c) in {"Cc", "Cs"} else c for c in query)
    return cleaned.split()[:MAX_SEARCH_WORDS]


def fts_query(words: list[str]) -> str:
    """An FTS5 query matching rows that contain every word: each one a quoted string, so that
    AND, OR, NEAR, *, ^, column filters and parentheses in a user's words are only characters."""
    return " AND ".join('"' + w.replace('"', '""') + '"' for w in words)


def _like_escaped(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _stored(row: tuple) -> StoredResult:
    values = list(row)
    values[11] = json.loads(values[11])
    return StoredResult(*values)


class LocalSink:
    scheme: ClassVar[str] = "local"
    needs_image: ClassVar[bool] = True  # for the thumbnail the admin page shows

    def __init__(self, store: LocalStore, settings: Settings | None = None) -> None:
        self.store = store
        self.settings = settings

    @classmethod
    def from_url(cls, url: SplitResult, context: SinkContext) -> LocalSink:
        if url.netloc:
            raise SinkConfigError(f"local sink URL takes a path, not a host: use local:///path/to/results.sqlite3 (got {url.geturl()!r})")
        path = Path(unquote(url.path)) if url.path else context.settings.data_dir / "results.sqlite3"
        return cls(LocalStore(path), context.settings)

    def check(self) -> None:
        self.store.count()

    def deliver(self, result: OcrResult, image: bytes | None) -> str:
        row = self.store.save(result)
        if image and self.settings is not None and self.store.thumbnail(result.image_sha256) is None:
            try:
                if is_pdf(image):
                    picture = next(pdf_pages(image, max_pages=self.settings.max_pdf_pages))  # its first page
                else:
                    picture = normalise(image, max_pixels=self.settings.max_image_pixels, max_bytes=self.settings.max_image_bytes)
                self.store.save_thumbnail(result.image_sha256, picture)
            except Exception as exc:  # noqa: BLE001 - the text is delivered; a missing thumbnail is only less to look at
                log.warning("no thumbnail for image %s: %s", result.image_sha256[:12], exc)
        return f"local row {row}"

    def url(self, privacy: bool = True) -> str:
        return f"local://{self.store.path}"
