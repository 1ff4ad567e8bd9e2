"""The Notion sink: every recognised image becomes one row (a page) in a team's Notion database.

    notion://<integration-token>@<database-id>?option=value&…
    notion://                       token, database and API address from OCRHUB_NOTION_*

Options: rate (requests/s shared by all workers per token, default 3), timeout (s, 60),
settle (s to wait before looking a row up after an unanswered write, 2), title (template),
data_source (name or id, for databases with several), database (id or link, instead of the
host part), base_url, and one per column (name, text, chat, sender, time, image, source, engine,
message_id) giving its property name. See docs/notion.md.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode

import redis

from ocr_core.job import ImageJob, OcrResult
from ocrhub.settings import Settings
from sinks.base import SinkConfigError, SinkContext, SinkError
from sinks.notion.api import Ambiguous, NotionApi, NotionRejected, make_client, shared_budget
from sinks.notion.ids import compact, parse_object_id
from sinks.notion.image import DEFAULT_LIMIT, Prepared, prepare
from sinks.notion.page import BLOCKS_PER_REQUEST, FILE_BLOCKS, check_template, image_block, paragraphs, properties, row_key
from sinks.notion.schema import BY_KEY, Schema, check, column_names, find_data_source, plain

log = logging.getLogger(__name__)

NUMBERS = {"rate": (3.0, 0.01, 1000.0), "timeout": (60.0, 0.1, 600.0), "settle": (2.0, 0.0, 60.0)}
OPTIONS = {"title", "data_source", "database", "base_url", "v", *NUMBERS, *BY_KEY}
ATTEMPTS = 5
RECHECK_AFTER = 60.0


@dataclass(frozen=True)
class NotionConfig:
    token: str
    database_id: str
    base_url: str
    names: dict[str, str]
    title: str = ""
    data_source: str = ""
    rate: float = 3.0
    timeout: float = 60.0
    settle: float = 2.0
    options: dict[str, str] = field(default_factory=dict)  # as given, for url()


def parse_url(url: SplitResult, settings: Settings, *, database_required: bool = True) -> NotionConfig:
    options = dict(parse_qsl(url.query, keep_blank_values=True))
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise SinkConfigError(f"unknown notion:// option(s) {unknown}: use {', '.join(sorted(OPTIONS - {'v'}))}")
    userinfo, _, host = url.netloc.rpartition("@")
    token = unquote(userinfo.partition(":")[0]) or settings.notion_token.get_secret_value()
    if not token:
        raise SinkConfigError("no Notion integration token: write notion://<token>@<database-id>, or set OCRHUB_NOTION_TOKEN")
    where = options.get("database") or (host + url.path if host else "") or settings.notion_database_id
    if not where.strip() and database_required:
        raise SinkConfigError("no Notion database: write notion://<token>@<database-id>, or set OCRHUB_NOTION_DATABASE_ID")
    names = column_names({**settings.notion_properties, **{k: v for k, v in options.items() if k in BY_KEY}})
    title = options.get("title", settings.notion_title)
    check_template(title)
    numbers = {name: _number(options, name, *limits) for name, limits in NUMBERS.items()}
    return NotionConfig(
        token=token,
        database_id=parse_object_id(where) if where.strip() else "",
        base_url=options.get("base_url") or settings.notion_base_url,
        names=names,
        title=title,
        data_source=options.get("data_source", ""),
        options={k: v for k, v in options.items() if k not in ("v", "database")},
        **numbers,
    )


def _number(options: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = options.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise SinkConfigError(f"notion:// option {name}={raw!r} must be a number from {low:g} to {high:g}")
    return value


SEARCH_WORDS = 10


@dataclass(frozen=True)
class FoundRow:
    """A row as a search shows it."""

    key: str  # the Message ID cell: "<message id>#<index>/<job id>"
    text: str
    sender: str
    sent_at: str
    url: str

    @property
    def job_id(self) -> str:
        return self.key.rpartition("/")[2]


def found_row(page: dict[str, Any], schema: Schema) -> FoundRow:
    def cell(key: str) -> str:
        if key not in schema.columns:
            return ""
        name, kind = schema.columns[key]
        value = (page.get("properties") or {}).get(name) or {}
        if kind in ("title", "rich_text"):
            return plain(value.get(kind))
        if kind == "select":
            return str((value.get("select") or {}).get("name", ""))
        if kind == "date":
            return str((value.get("date") or {}).get("start", ""))
        return ""

    return FoundRow(cell("message_id"), cell("text"), cell("sender"), cell("time"), str(page.get("url") or ""))


class NotionSink:
    scheme: ClassVar[str] = "notion"
    needs_image: ClassVar[bool] = True

    def __init__(self, config: NotionConfig, conn: redis.Redis, settings: Settings) -> None:
        self.config = config
        self.conn = conn
        self.max_pixels = settings.max_image_pixels
        self.marker_ttl = settings.blob_ttl
        self.client = make_client(config.token, config.base_url, config.timeout)
        self.api = NotionApi(self.client, shared_budget(conn, config.token, config.rate), attempts=ATTEMPTS)
        self._schema: Schema | None = None
        self._broken: tuple[SinkConfigError, float] | None = None
        self._upload_limit = DEFAULT_LIMIT

    @classmethod
    def from_url(cls, url: SplitResult, context: SinkContext) -> NotionSink:
        return cls(parse_url(url, context.settings), context.conn, context.settings)

    def check(self) -> None:
        """Token, database sharing and every column the sink writes, asked of Notion afresh."""
        self._schema = self._broken = None
        self._ready()

    def url(self, privacy: bool = True) -> str:
        token = "****" if privacy else quote(self.config.token, safe="")
        query = urlencode(self.config.options)
        return f"notion://{token}@{compact(self.config.database_id)}" + (f"?{query}" if query else "")

    def deliver(self, result: OcrResult, image: bytes | None) -> str:
        if not result.ok:
            return f"no Notion row: the image could not be read ({result.error})"
        schema = self._ready()
        key = row_key(result.job)
        marker = self._marker(schema, key)
        known = self.conn.get(marker)
        if known is not None:
            return f"notion page {known.decode()} (written before)"
        body = paragraphs(result.text)
        page = self._find(schema, key)
        written: int | None = None
        note = ""
        if page is None:
            page, written, note = self._create(schema, result, image, key, body)
        self._finish_body(page["id"], body, written)
        where = page.get("url") or page["id"]
        self.conn.set(marker, where, ex=self.marker_ttl)
        return f"notion page {where}" + (f" ({note})" if note else "")

    def _ready(self) -> Schema:
        if self._schema is not None:
            return self._schema
        if self._broken is not None and time.monotonic() - self._broken[1] < RECHECK_AFTER:
            # Every queued delivery would ask Notion again and fail the same way; answer from memory for a while.
            raise type(self._broken[0])(str(self._broken[0]))
        try:
            me = self.api.read("users.me", self.client.users.me)
            limits = (me.get("bot") or {}).get("workspace_limits") or {}
            self._upload_limit = int(limits.get("max_file_upload_size_in_bytes") or DEFAULT_LIMIT)
            database_id, source = find_data_source(self.api, self.config.database_id, self.config.data_source)
            self._schema = check(database_id, source, self.config.names)
        except SinkConfigError as exc:
            self._broken = (exc, time.monotonic())
            raise
        self._broken = None
        return self._schema

    def _marker(self, schema: Schema, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"ocrhub:notion:written:{compact(schema.data_source_id)}:{digest}"

    def search_chat(self, chat_id: str, query: str, limit: int) -> list[FoundRow]:
        """Rows of `chat_id` whose Text (its first 2000 characters) holds every word of `query`,
        newest first. Nothing when the database has no Chat or Text column: a search could not be
        kept to the one chat."""
        schema = self._ready()
        if "chat" not in schema.columns or "text" not in schema.columns:
            return []
        chat_name, chat_kind = schema.columns["chat"]
        conditions = [{"property": chat_name, chat_kind: {"equals": chat_id}}]
        conditions += [{"property": schema.name("text"), "rich_text": {"contains": word}} for word in query.split()[:SEARCH_WORDS]]
        found = self.api.read(
            "data_sources.query",
            self.client.data_sources.query,
            schema.data_source_id,
            filter={"and": conditions},
            sorts=[{"timestamp": "created_time", "direction": "descending"}],
            page_size=max(1, min(limit, 100)),
        )
        return [found_row(page, schema) for page in found.get("results", []) if page.get("object") == "page" and not page.get("in_trash")]

    def _find(self, schema: Schema, key: str) -> dict[str, Any] | None:
        found = self.api.read(
            "data_sources.query",
            self.client.data_sources.query,
            schema.data_source_id,
            filter={"property": schema.name("message_id"), "rich_text": {"equals": key}},
            sorts=[{"timestamp": "created_time", "direction": "ascending"}],
            page_size=10,
        )
        pages = [p for p in found.get("results", []) if p.get("object") == "page" and not p.get("in_trash")]
        return pages[0] if pages else None

    def _create(
        self, schema: Schema, result: OcrResult, image: bytes | None, key: str, body: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], int | None, str]:
        """The page and how many paragraphs it holds (None: found, not created); looks again after any unanswered create."""
        prepared = self._prepare(image, result.job)
        if prepared.note:
            log.info("notion: %s: %s", key, prepared.note)
        upload: tuple[str, str] | None = None
        last: Exception | None = None
        for _ in range(ATTEMPTS):
            if prepared.data is not None and upload is None:
                upload = self._upload(prepared)
            head = ([image_block(upload[0], prepared.content_type)] if upload else []) + body[: BLOCKS_PER_REQUEST - (1 if upload else 0)]
            try:
                page = self.api.write(
                    "pages.create",
                    self.client.pages.create,
                    parent={"type": "data_source_id", "data_source_id": schema.data_source_id},
                    properties=properties(result, schema, self.config.title, upload),
                    children=head,
                )
            except Ambiguous as exc:
                last = exc
                time.sleep(self.config.settle)
                found = self._find(schema, key)
                if found is not None:
                    return found, None, prepared.note
            except NotionRejected:
                # A column renamed or retyped since the start gives a precise message; else Notion's own.
                self.check()
                raise
            else:
                return page, len(head) - (1 if upload else 0), prepared.note
        raise SinkError(f"Notion did not confirm the row for {key} after {ATTEMPTS} attempts; last: {last}")

    def _prepare(self, image: bytes | None, job: ImageJob) -> Prepared:
        if image is None:
            return Prepared(None, note="image not attached: its bytes have expired from Redis")
        return prepare(image, self._upload_limit, f"{job.message_id or job.job_id}-{job.index}", max_pixels=self.max_pixels)

    def _upload(self, prepared: Prepared) -> tuple[str, str]:
        """(file upload id, file name); an unfinished upload is simply abandoned, Notion expires it."""
        last: Exception | None = None
        for _ in range(ATTEMPTS):
            try:
                created = self.api.write(
                    "file_uploads.create",
                    self.client.file_uploads.create,
                    mode="single_part",
                    filename=prepared.filename,
                    content_type=prepared.content_type,
                )
                sent = self.api.write(
                    "file_uploads.send",
                    self.client.file_uploads.send,
                    created["id"],
                    file=(prepared.filename, prepared.data, prepared.content_type),
                )
            except Ambiguous as exc:
                last = exc
                continue
            if sent.get("status") != "uploaded":
                raise SinkError(f"Notion left file upload {created['id']} in status {sent.get('status')!r}")
            return created["id"], prepared.filename
        raise SinkError(f"Notion did not take the image after {ATTEMPTS} attempts; last: {last}")

    def _finish_body(self, page_id: str, body: list[dict[str, Any]], written: int | None) -> None:
        """Append the paragraphs the page lacks; after an unanswered append, count what arrived."""
        for _ in range(ATTEMPTS * 2 + len(body) // BLOCKS_PER_REQUEST):
            if written is None:
                written = self._paragraphs_on(page_id)
            if written >= len(body):
                return
            batch = body[written: written + BLOCKS_PER_REQUEST]
            try:
                self.api.write("blocks.children.append", self.client.blocks.children.append, page_id, children=batch)
            except Ambiguous:
                time.sleep(self.config.settle)
                written = None
            else:
                written += len(batch)
        raise SinkError(f"Notion page {page_id}: the body could not be completed; the delivery is retried and resumes where it stopped")

    def _paragraphs_on(self, page_id: str) -> int:
        count, first_type, cursor = 0, "", None
        while True:
            kwargs: dict[str, Any] = {"page_size": 100}
            if cursor:
                kwargs["start_cursor"] = cursor
            listed = self.api.read("blocks.children.list", self.client.blocks.children.list, page_id, **kwargs)
            blocks = listed.get("results", [])
            if count == 0 and blocks:
                first_type = blocks[0].get("type", "")
            count += len(blocks)
            cursor = listed.get("next_cursor")
            if not listed.get("has_more") or not cursor:
                break
        # The original's block, when there is one, is always the first child the sink wrote.
        return count - (1 if first_type in FILE_BLOCKS else 0)
