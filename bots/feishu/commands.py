"""What people ask the bot in words: "@bot 搜索 发票" / "@bot search invoice", "@bot 帮助" / "@bot help",
and, replying to an earlier picture or file with "@bot", to read that one.

A text message that @-mentions the bot in a group (any text message in a direct chat) and reads as a
command is claimed like an image message (exactly once, whatever Feishu re-sends) and answered by a
worker (`answer`), in the language the command was asked in. Search answers only from the chat it was
asked in (the local store, and the Notion databases that chat's results go to): never another group's text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

from rq import get_current_job

from bots.feishu.cards import Match, notion_button, search_card
from ocrhub.settings import get_settings

log = logging.getLogger("ocrhub.feishu")

MENTION = re.compile(r"@_user_\d+|@_all")
HELP = {"help": "en", "/help": "en", "?": "en", "帮助": "zh", "？": "zh", "怎么用": "zh"}
SEARCH = {"search": "en", "find": "en", "/search": "en", "搜索": "zh", "搜": "zh", "查找": "zh", "找": "zh", "查": "zh"}
MAX_QUERY = 100
RESULTS = 5
SNIPPET = 80


@dataclass(frozen=True)
class Command:
    kind: str  # "help", "search", or "read" (the message replied to)
    query: str  # the words searched for; for "read", the id of the message to read
    language: str  # "zh" or "en"


def parse_command(text: str, replying_to: str = "") -> Command | None:
    """The command in a message's text (mentions taken out), or None when it asks nothing of us. A
    bare mention is a request for help; replying to a message, anything but search or help asks to
    read that message."""
    words = " ".join(MENTION.sub(" ", text).split())
    language = "zh" if _mostly_chinese(words or text) else "en"
    explicit = _explicit(words)
    if replying_to and (explicit is None or (explicit.kind == "help" and not words)):
        return Command("read", replying_to, language if words else "zh")
    return explicit


def _explicit(words: str) -> Command | None:
    if not words:
        return Command("help", "", "en")
    lowered = words.lower()
    for word, language in HELP.items():
        if lowered == word:
            return Command("help", "", language)
    for word, language in sorted(SEARCH.items(), key=lambda item: -len(item[0])):
        if lowered.startswith(word) and (language == "zh" or lowered[len(word) : len(word) + 1] in ("", " ", ":", "：")):
            query = words[len(word) :].strip(" ：:")[:MAX_QUERY]
            return Command("search", query, language) if query else Command("help", "", language)
    return None


def command_payload(bot_id: str, chat_id: str, message_id: str, sender: str, command: Command) -> dict[str, Any]:
    return {"bot_id": bot_id, "chat_id": chat_id, "message_id": message_id, "sender": sender, **asdict(command)}


def answer_job_id(bot_id: str, message_id: str) -> str:
    return "ocrhub-answer-" + hashlib.sha256(f"{bot_id}\x1f{message_id}".encode()).hexdigest()[:32]


def answer(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entry point, enqueued as "bots.feishu.commands.answer" by the intake: reply to the command."""
    from bots.feishu.api import api_for
    from bots.feishu.bots import bot_in_force

    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("bots.feishu.commands.answer runs inside an RQ worker")
    conn, settings = rq_job.connection, get_settings()
    command = Command(payload["kind"], payload["query"], payload["language"])
    bot = bot_in_force(settings, conn, payload["bot_id"])
    answer_message = compose(conn, settings, bot, payload, command)
    if answer_message is None:
        return {"message_id": payload["message_id"], "read": command.query}
    reply_id = api_for(bot, conn).reply(
        payload["message_id"], *answer_message,
        uuid=answer_job_id(bot.bot_id, payload["message_id"])[-32:], in_thread=bot.reply_in_thread,
    )  # fmt: skip
    return {"message_id": payload["message_id"], "reply": reply_id, "kind": command.kind}


def compose(conn: Any, settings: Any, bot: Any, payload: dict[str, Any], command: Command) -> tuple[str, str] | None:
    """The answer as (msg_type, content); None when the pictures asked about were queued to be read
    (their replies are the answer)."""
    from ocrhub.knowledge import search_chat

    if command.kind == "read":
        text = read_earlier(conn, settings, bot, payload, command)
        if not text:
            return None
    elif command.kind == "search":
        found = search_chat(settings, conn, "feishu", payload["chat_id"], command.query, RESULTS, bot_id=bot.bot_id)
        if settings.feishu_reply_format == "card":
            return "interactive", json.dumps(search_reply_card(command, found.hits, missed=bool(found.missed)), ensure_ascii=False)
        text = search_reply(command, found.hits, missed=bool(found.missed))
    else:
        text = help_reply(command.language)
    return "text", json.dumps({"text": text}, ensure_ascii=False)


def read_earlier(conn: Any, settings: Any, bot: Any, payload: dict[str, Any], command: Command) -> str:
    """Queue the pictures of the message replied to, each once (its reply goes under that message);
    the words to answer the asker with instead, when there is nothing new to read."""
    from rq.job import Job

    from bots.feishu.api import SCOPE_CODES, FeishuPermanentError, api_for
    from bots.feishu.events import MalformedEvent, resources_of
    from ocr_core.job import ImageJob
    from ocr_core.queue import enqueue_image, ocr_job_id

    zh = command.language == "zh"
    try:
        msg_type, content, chat, poster = api_for(bot, conn).message(command.query)
    except FeishuPermanentError as exc:
        log.warning("feishu bot %s could not open message %s to read it: %s", bot.bot_id, command.query, exc)
        if exc.code in SCOPE_CODES:
            return (
                "我看不到群里之前的消息：需要管理员为应用开通「获取群组中所有消息」（im:message.group_msg）权限。"
                if zh else "I cannot open earlier messages of this group: an admin must grant the app the scope "
                "\"Read all messages in groups\" (im:message.group_msg)."
            )  # fmt: skip
        return "打不开你回复的那条消息（可能已被撤回）。" if zh else "I could not open the message you replied to (it may have been recalled)."
    try:
        keys, file_name = resources_of(msg_type, content)
    except MalformedEvent:
        keys, file_name = (), ""
    if chat != payload["chat_id"] or not keys:
        return "回复的那条消息里没有可识别的图片或文件。" if zh else "The message you replied to has no picture or file to read."
    jobs = [
        ImageJob(
            platform="feishu", bot_id=bot.bot_id, chat_id=chat, message_id=command.query, image_key=key,
            sender=poster or payload["sender"], chat_type="group", index=index if len(keys) > 1 else 0,
            resource="file" if msg_type == "file" else "image", name=file_name,
        )
        for index, key in enumerate(dict.fromkeys(keys))
    ]  # fmt: skip
    fresh = [job for job in jobs if not conn.exists(Job.key_for(ocr_job_id(job.job_id)))]
    if not fresh:
        return "这条消息已经识别过了，结果在它下面的回复里。" if zh else "That one has been read already: its text is in the reply under it."
    with conn.pipeline() as pipe:
        for job in fresh:
            enqueue_image(conn, job, settings, pipeline=pipe)
        pipe.execute()
    return ""


def search_reply_card(command: Command, hits: list[Any], missed: bool = False) -> dict[str, Any]:
    """The answer as a card: each sender by name (a person element), each Notion row as a button."""
    label = notion_button(command.language)
    matches = [
        Match(snippet(hit.text, command.query), hit.sender, hit.sent_at[:10], (label, hit.links[0]) if hit.links else None) for hit in hits
    ]
    retry = ("换个关键词试试。" if command.language == "zh" else "Try other words.") if not hits else ""
    return search_card(_headline(command, len(hits)), matches, _partly(command, missed) or retry)


def _headline(command: Command, found: int) -> str:
    zh = command.language == "zh"
    if not found:
        return f"在本群没有找到与「{command.query}」相关的图片文字。" if zh else f'Nothing in this chat\'s pictures matches "{command.query}".'
    return f"在本群找到 {found} 条与「{command.query}」相关的结果：" if zh else f'{found} match(es) for "{command.query}" in this chat:'


def _partly(command: Command, missed: bool) -> str:
    if not missed:
        return ""
    return "（Notion 暂时无法搜索，以上只是部分结果。）" if command.language == "zh" else "(Notion could not be searched just now: this may not be everything.)"


def search_reply(command: Command, hits: list[Any], missed: bool = False) -> str:
    partly = "\n" + _partly(command, missed) if missed else ""
    if not hits:
        return _headline(command, 0) + partly
    lines = [_headline(command, len(hits))]
    for number, hit in enumerate(hits, 1):
        lines.append(f"{number}. {snippet(hit.text, command.query)}")
        where = " · ".join(part for part in (hit.sender, hit.sent_at[:10]) if part)
        link = f" {hit.links[0]}" if hit.links else ""
        lines.append(f"   — {where}{link}")
    return "\n".join(lines) + partly


def snippet(text: str, query: str) -> str:
    """The line that holds the first query word (else the first line), cut around it."""
    flat = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    first = query.split()[0].lower() if query.split() else ""
    line = next((candidate for candidate in flat if first and first in candidate.lower()), flat[0])
    if len(line) <= SNIPPET:
        return line
    at = max(0, line.lower().find(first) - SNIPPET // 3) if first else 0
    cut = line[at : at + SNIPPET]
    return ("…" if at else "") + cut + ("…" if at + SNIPPET < len(line) else "")


def help_reply(language: str) -> str:
    if language == "zh":
        return (
            "我会识别群里的图片和文件（截图、发票、扫描件、PDF），把文字回复在这里并存入知识库。\n"
            "· 发图片或图片/PDF 文件：自动识别\n"
            "· @我 搜索 关键词：在本群识别过的文字里查找\n"
            "· @我 帮助：显示这条说明"
        )
    return (
        "I read the pictures and files posted here (screenshots, invoices, scans, PDFs), reply with their text and keep it searchable.\n"
        "· Post a picture, or a picture or PDF as a file: read automatically\n"
        "· @me search <words>: find text read in this chat\n"
        "· @me help: this message"
    )


def _mostly_chinese(text: str) -> bool:
    han = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return han * 2 >= len([ch for ch in text if ch.isalpha()]) and han > 0
