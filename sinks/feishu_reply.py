"""`feishu-reply://`: answer the Feishu message an image came in with the text read from it.

Options: `feishu-reply://?thread=1` replies in a thread under the image (`thread=0` forces a plain
reply; unset follows OCRHUB_FEISHU_REPLY_IN_THREAD or the bot's reply_in_thread); `format=text`
replies in plain text instead of a message card (unset follows OCRHUB_FEISHU_REPLY_FORMAT).

Exactly once: every part carries a uuid derived from the job, so Feishu itself drops a repeat
within an hour, and each posted part is remembered in Redis so a retry days later skips it.

A card links the Notion row (see sinks.base.chat_links) when it is known as the reply
goes out; one written later is added to the posted card by `amend`, which the delivery job calls
after every delivery of the job, so whichever of the two finishes last brings the card up to date.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import ClassVar
from urllib.parse import SplitResult, parse_qs

import redis

from bots.feishu.bots import bot_in_force, registry
from bots.feishu.cards import notion_button, text_card
from ocr_core.errors import TransientError
from ocr_core.job import OcrResult
from ocr_core.limits import LimitExceeded
from ocr_core.limits.window import SlidingWindow
from ocr_core.store import receipts
from ocrhub.settings import Settings
from sinks.base import SinkConfigError, SinkContext, SinkError, chat_links
from sinks.feishu_words import failure, words

# Feishu caps a text message's request body at 150 KB; keep clear of it.
BODY_LIMIT = 150 * 1024 - 2048
# A card's request body is capped at 30 KB; its text may stand twice (a preview and the whole).
CARD_TEXT_LIMIT = 30 * 1024 - 8 * 1024
# Per chat, across every worker (Feishu: 5 QPS per group). The window is a little over a second
# because a slot is taken in Redis a few milliseconds before Feishu counts the request.
CHAT_RATE = 5
CHAT_WINDOW = 1.2
RATE_PREFIX = "ocrhub:feishu:rate"
MAX_REASON = 300
PREFIX = "ocrhub:feishu:replied"
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class FeishuReplySink:
    scheme: ClassVar[str] = "feishu-reply"
    needs_image: ClassVar[bool] = False

    def __init__(self, context: SinkContext, thread: bool | None = None, reply_format: str = "") -> None:
        self.context = context
        self.thread = thread
        self.reply_format = reply_format or context.settings.feishu_reply_format
        self.limiter = SlidingWindow(context.conn, RATE_PREFIX, limit=CHAT_RATE, window=CHAT_WINDOW)

    @classmethod
    def from_url(cls, url: SplitResult, context: SinkContext) -> FeishuReplySink:
        if url.netloc or url.path not in ("", "/"):
            raise SinkConfigError(f"feishu-reply takes no host or path, only options: feishu-reply://?thread=1 (got {url.geturl()!r})")
        options = parse_qs(url.query, keep_blank_values=True)
        unknown = sorted(set(options) - {"thread", "format"})
        if unknown:
            raise SinkConfigError(f"feishu-reply: unknown option(s) {', '.join(unknown)} (known: thread, format)")
        reply_format = options.get("format", [""])[-1].lower()
        if reply_format not in ("", "card", "text"):
            raise SinkConfigError(f"feishu-reply: format={reply_format!r} is not one of card, text")
        thread = None
        if "thread" in options:
            value = options["thread"][-1].lower()
            if value not in TRUE + FALSE:
                raise SinkConfigError(f"feishu-reply: thread={value!r} is not one of {', '.join(TRUE + FALSE)}")
            thread = value in TRUE
        return cls(context, thread, reply_format)

    def check(self) -> None:
        if not registry(self.context.settings, self.context.conn).bots():
            raise SinkConfigError(
                "feishu-reply needs a Feishu bot: set OCRHUB_FEISHU_APP_ID and OCRHUB_FEISHU_APP_SECRET "
                "(or OCRHUB_FEISHU_BOTS, or add one on the admin page), see docs/feishu.md"
            )

    def deliver(self, result: OcrResult, image: bytes | None) -> str:
        # Imported here: lark-oapi takes seconds to import, and only processes that reply need it.
        from bots.feishu.api import api_for

        job = result.job
        if job.platform != "feishu":
            raise SinkConfigError(f"feishu-reply can only answer Feishu messages, not a {job.platform!r} job ({job.job_id}); fix the route")
        conn, settings = self.context.conn, self.context.settings
        bot = bot_in_force(settings, conn, job.bot_id)
        api = api_for(bot, conn)
        in_thread = bot.reply_in_thread if self.thread is None else self.thread
        parts = list(reply_parts(result, CARD_TEXT_LIMIT if self.reply_format == "card" else BODY_LIMIT, bot.language))
        chat = f"{bot.bot_id}:{job.chat_id}"
        links = elsewhere(conn, settings, job.job_id) if self.reply_format == "card" else []  # text is never updated
        posted = []
        for index, text in enumerate(parts):
            marker = part_key(job.job_id, index)
            done = conn.get(marker)
            if done is not None:
                posted.append(done.decode())
                continue
            msg_type, content = ("interactive", card_content(result, text, bot.language, links)) if self.reply_format == "card" else ("text", text_content(text))
            try:
                message_id = api.reply(
                    job.message_id,
                    msg_type,
                    content,
                    uuid=reply_uuid(job.job_id, index),
                    in_thread=in_thread,
                    pace=lambda: self.limiter.acquire(chat),
                )
            except LimitExceeded as exc:
                raise SinkError(
                    f"Feishu chat {job.chat_id} is busy: more than {CHAT_RATE} messages per {CHAT_WINDOW:g} s queued for {chat}"
                ) from exc
            except TransientError as exc:
                raise SinkError(str(exc)) from exc
            conn.set(marker, message_id or "-", ex=settings.blob_ttl)
            posted.append(message_id)
        if self.reply_format == "card":
            conn.set(shown_key(job.job_id), json.dumps(links), ex=settings.blob_ttl)
        return f"feishu reply to {job.message_id} in chat {job.chat_id}: {', '.join(posted)}"

    def amend(self, result: OcrResult) -> None:
        """Bring the posted cards' links up to date with what the other sinks have reported since."""
        job = result.job
        conn, settings = self.context.conn, self.context.settings
        shown = conn.get(shown_key(job.job_id))
        if job.platform != "feishu" or shown is None:
            return  # not a card, or not posted yet: the reply will show the links itself
        links = elsewhere(conn, settings, job.job_id)
        if links == json.loads(shown):
            return
        from bots.feishu.api import api_for

        bot = bot_in_force(settings, conn, job.bot_id)
        api = api_for(bot, conn)
        chat = f"{bot.bot_id}:{job.chat_id}"
        for index, text in enumerate(reply_parts(result, CARD_TEXT_LIMIT, bot.language)):
            message_id = (conn.get(part_key(job.job_id, index)) or b"-").decode()
            if message_id != "-":
                api.update_card(message_id, card_content(result, text, bot.language, links), pace=lambda: self.limiter.acquire(chat))
        conn.set(shown_key(job.job_id), json.dumps(links), ex=settings.blob_ttl)

    def url(self, privacy: bool = True) -> str:
        options = ([f"thread={int(self.thread)}"] if self.thread is not None else []) + ([f"format={self.reply_format}"] if self.reply_format != "card" else [])
        return "feishu-reply://" + (f"?{'&'.join(options)}" if options else "")


def part_key(job_id: str, part: int) -> str:
    return f"{PREFIX}:{job_id}:{part}"


def shown_key(job_id: str) -> str:
    """The links the job's cards show."""
    return f"{PREFIX}:{job_id}:links"


def elsewhere(conn: redis.Redis, settings: Settings, job_id: str) -> list[str]:
    """Where else this job went that the chat may see (the Notion row)."""
    return chat_links(receipts(conn, [job_id]).get(job_id, {}), settings)


def reply_uuid(job_id: str, part: int) -> str:
    """Stable for a job's part across retries and workers; Feishu allows 50 characters."""
    return f"{job_id}-{part}"


def text_content(text: str) -> str:
    return json.dumps({"text": text}, ensure_ascii=False)


def card_content(result: OcrResult, text: str, language: str = "en", links: list[str] | None = None) -> str:
    """One part of the reply as a message card: red, with the technical reason in small print, when
    the picture could not be read."""
    said = words(language)
    seconds = sum(result.timings.values())
    if result.error:
        reason = " ".join(result.error.split())
        meta = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
    else:
        meta = " · ".join(part for part in (result.engine, f"{seconds:.1f} s" if seconds else "") if part)
    title = said["title.failed"] if result.error else said["title.ok"]
    buttons = tuple((notion_button(language), url) for url in links or ())
    shape = text_card(text, title=title, meta=meta, full_text_label=said["full"], template="red" if result.error else "blue", links=buttons)
    return json.dumps(shape, ensure_ascii=False)


def reply_parts(result: OcrResult, limit: int = BODY_LIMIT, language: str = "en") -> Iterator[str]:
    job = result.job
    # A post yields one reply per image: say which one.
    label = (f"图 {job.index + 1}：\n" if language == "zh" else f"Image {job.index + 1}:\n") if job.index or job.context else ""
    if result.error:
        yield f"{label}{failure(result, language)}"
        return
    if not result.text.strip():
        yield f"{label}{words(language)['empty.text']}"
        return
    chunks = split_text(result.text, limit - wire_size(label) - wire_size("(99/99)\n"))
    for number, chunk in enumerate(chunks, 1):
        counter = f"({number}/{len(chunks)})\n" if len(chunks) > 1 else ""
        yield f"{label}{counter}{chunk}"


def wire_size(text: str) -> int:
    """Bytes `text` adds to the request body: escaped once inside `content`, and again in the body JSON."""
    inner = json.dumps(text, ensure_ascii=False)[1:-1]
    return len(json.dumps(inner, ensure_ascii=False).encode()) - 2


def split_text(text: str, budget: int) -> list[str]:
    """Pieces of at most `budget` wire bytes each, cut at line ends where possible."""
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for line in text.split("\n"):
        cost = wire_size(line + "\n")
        if cost > budget:
            if current:
                pieces.append("\n".join(current))
                current, used = [], 0
            pieces.extend(_split_long(line, budget))
            continue
        if used + cost > budget:
            pieces.append("\n".join(current))
            current, used = [], 0
        current.append(line)
        used += cost
    if current:
        pieces.append("\n".join(current))
    return [p for p in pieces if p.strip()]


def _split_long(line: str, budget: int) -> list[str]:
    pieces, start, used = [], 0, 0
    for index, char in enumerate(line):
        cost = wire_size(char)
        if used + cost > budget:
            pieces.append(line[start:index])
            start, used = index, 0
        used += cost
    pieces.append(line[start:])
    return pieces
