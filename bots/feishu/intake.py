"""From received messages to queued image jobs: policy, dedupe, enqueue. Shared by webhook and long connection.

Messages arriving together form a batch. One Redis transaction claims every message and queues one
job for the whole batch, so an event is acknowledged after a single round trip and one RQ job,
however many images it holds. A worker then expands the batch (`expand`): each image of each
message this batch won becomes its own job, in order. Building an RQ job costs the webhook about
0.3 ms, most of its time at hundreds of events a second (bench/ingest.py); the workers have it to spare.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import redis
import redis.asyncio
from redis.client import Pipeline
from rq import get_current_job
from rq.job import Job

from bots.feishu.bots import FeishuBot
from bots.feishu.commands import Command, answer_job_id, command_payload, parse_command
from bots.feishu.dedupe import Dedupe, owned
from bots.feishu.events import IMAGE_TYPES, TEXT_TYPES, MessageEvent
from ocr_core.job import ImageJob
from ocr_core.queue import acheck_intake, check_intake, delivery_queue, enqueue_image, intake_queue, ocr_job_id, retry_policy
from ocrhub.settings import Settings, get_settings

PLATFORM = "feishu"
EXPAND = "bots.feishu.intake.expand"
ANSWER = "bots.feishu.commands.answer"

log = logging.getLogger("ocrhub.feishu")


@dataclass(frozen=True)
class Outcome:
    status: str  # "queued", "duplicate" or "ignored"
    jobs: tuple[ImageJob, ...] = ()
    reason: str = ""


def command_in(bot: FeishuBot, event: MessageEvent) -> Command | None:
    """The command a text message gives the bot: in a direct chat any text, in a group only text that
    @-mentions it (anyone, when the bot's own open_id is not configured)."""
    if event.message_type not in TEXT_TYPES:
        return None
    if event.chat_type != "p2p":
        mentioned = bot.open_id in event.mentions if bot.open_id else bool(event.mentions)
        if not (event.mentions_bot or mentioned):
            return None
    return parse_command(event.text, replying_to=event.parent_id)


def jobs_for(bot: FeishuBot, event: MessageEvent) -> tuple[ImageJob, ...]:
    """One job per distinct image, in the order the message shows them."""
    keys = tuple(dict.fromkeys(event.image_keys))
    return tuple(
        ImageJob(
            platform=PLATFORM,
            bot_id=bot.bot_id,
            chat_id=event.chat_id,
            message_id=event.message_id,
            image_key=key,
            sender=event.sender_id,
            sent_at=event.sent_at,
            chat_type=event.chat_type,
            context=event.text,
            index=index,
            resource="file" if event.message_type == "file" else "image",
            name=event.file_name,
        )
        for index, key in enumerate(keys)
    )


def ignore_reason(bot: FeishuBot, event: MessageEvent) -> str:
    if event.sender_type != "user":
        return f"sent by a {event.sender_type}, not a person"
    if event.app_id and event.app_id != bot.app_id:
        return f"event for app {event.app_id} reached bot {bot.bot_id!r} (app {bot.app_id}): check the webhook URL"
    if event.message_type in TEXT_TYPES:
        return "" if command_in(bot, event) is not None else "text that asks the bot nothing"
    if event.message_type not in IMAGE_TYPES:
        return f"{event.message_type} message"
    if event.chat_type != "p2p" and bot.group_policy == "mention":
        mentioned = event.mentions_bot if event.mentions_bot is not None else bot.open_id in event.mentions
        if not mentioned:
            return "group message that does not @ the bot"
    if not event.image_keys:
        return "no images"
    if event.message_type == "file" and not readable_file(event.file_name):
        return "a file that is neither a picture nor a PDF"
    return ""


# Files read like pictures (or page by page, for PDFs); others (documents, archives, …) are not ours.
READABLE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".heic", ".heif", ".tif", ".tiff", ".pdf"})


def readable_file(name: str) -> bool:
    """Whether a file message's file is a picture or a PDF, by its name (a nameless file is tried)."""
    suffix = PurePosixPath(name.lower()).suffix
    return not name or suffix in READABLE_SUFFIXES


@dataclass(frozen=True)
class Batch:
    """What one transaction claims and queues: the candidate events and, per message, its jobs."""

    token: str
    events: tuple[MessageEvent, ...]
    indexes: tuple[int, ...]  # where each event's outcome goes
    jobs: tuple[tuple[ImageJob, ...], ...]


class Intake:
    def __init__(self, bot: FeishuBot, settings: Settings, conn: redis.Redis) -> None:
        self.bot = bot
        self.settings = settings
        self.conn = conn
        self.dedupe = Dedupe(bot.bot_id, settings.feishu_dedupe_ttl)

    def take(self, event: MessageEvent) -> Outcome:
        return self.take_all([event])[0]

    def take_all(self, events: Sequence[MessageEvent]) -> list[Outcome]:
        """Outcomes in the order of `events`, after one transaction; raises if it failed (nothing was claimed),
        and IntakeFull, claiming nothing, while Redis is close to its memory cap."""
        outcomes, batch = self._sort(events)
        if batch is None:
            return outcomes
        check_intake(self.conn, self.settings)
        with self.conn.pipeline() as pipe:
            self._record(batch, pipe)
            won = pipe.execute()[-1]
        return self._settle(outcomes, batch, won)

    async def atake_all(self, events: Sequence[MessageEvent], aconn: redis.asyncio.Redis) -> list[Outcome]:
        """`take_all` without blocking the event loop on Redis: the same commands, sent by `aconn`."""
        outcomes, batch = self._sort(events)
        if batch is None:
            return outcomes
        await acheck_intake(aconn, self.settings)
        # RQ only writes into synchronous pipelines: this one records its commands (command_stack,
        # redis-py's list of queued commands) without ever being sent, and aconn sends them.
        with self.conn.pipeline() as recorder:
            self._record(batch, recorder)
            commands = list(recorder.command_stack)
        async with aconn.pipeline(transaction=True) as pipe:
            for args, options in commands:
                pipe.execute_command(*args, **options)
            won = (await pipe.execute())[-1]
        return self._settle(outcomes, batch, won)

    def _sort(self, events: Sequence[MessageEvent]) -> tuple[list[Outcome], Batch | None]:
        outcomes, candidates, indexes = [], [], []
        for index, event in enumerate(events):
            reason = ignore_reason(self.bot, event)
            if reason:
                log.debug("feishu bot %s ignores message %s: %s", self.bot.bot_id, event.message_id, reason)
            else:
                candidates.append(event)
                indexes.append(index)
            outcomes.append(Outcome("ignored", reason=reason))
        if not candidates:
            return outcomes, None
        jobs = tuple(jobs_for(self.bot, event) for event in candidates)
        return outcomes, Batch(uuid.uuid4().hex, tuple(candidates), tuple(indexes), jobs)

    def _record(self, batch: Batch, pipe: Pipeline) -> None:
        # RQ's commands first: it switches the pipeline into a transaction only while it is empty.
        messages = [
            {"claim": self.dedupe.message_key(event.message_id), "jobs": [job.to_dict() for job in jobs], "command": self._command(event)}
            for event, jobs in zip(batch.events, batch.jobs)
        ]
        intake_queue(self.conn, self.settings).enqueue_call(
            EXPAND,
            args=(batch.token, messages),
            timeout=self.settings.job_timeout,
            retry=retry_policy(self.settings),
            result_ttl=self.settings.blob_ttl,
            failure_ttl=self.settings.blob_ttl * 4,
            description=f"feishu bot {self.bot.bot_id}: queue the images of {len(messages)} message(s)",
            pipeline=pipe,
        )
        self.dedupe.claim_all([(e.message_id, e.event_id) for e in batch.events], batch.token, pipe)

    def _command(self, event: MessageEvent) -> dict[str, Any] | None:
        command = command_in(self.bot, event)
        return None if command is None else command_payload(self.bot.bot_id, event.chat_id, event.message_id, event.sender_id, command)

    def _settle(self, outcomes: list[Outcome], batch: Batch, won: list[int]) -> list[Outcome]:
        for index, event, jobs, first in zip(batch.indexes, batch.events, batch.jobs, won):
            if first:
                log.info("feishu bot %s: message %s in chat %s: %d image(s) queued", self.bot.bot_id, event.message_id, event.chat_id, len(jobs))
                outcomes[index] = Outcome("queued", jobs)
            else:
                log.info("feishu bot %s: message %s already taken (re-send)", self.bot.bot_id, event.message_id)
                outcomes[index] = Outcome("duplicate")
        return outcomes


def batch_images(conn: redis.Redis, token: str, messages: list[dict[str, Any]]) -> list[ImageJob]:
    """The images of a queued batch that are its to read: those of the messages whose claim it won,
    each message once (a copy later in the same batch lost its claim to the first).
    """
    mine = owned(conn, [m["claim"] for m in messages], token)
    first = {m["claim"]: i for i, m in reversed(list(enumerate(messages)))}
    return [
        ImageJob.from_dict(job)
        for i, (message, won) in enumerate(zip(messages, mine))
        if won and first[message["claim"]] == i
        for job in message["jobs"]
    ]


def expand(token: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """RQ entry point, enqueued as "bots.feishu.intake.expand" by the webhook and the long connection.

    A retried expansion skips images whose job exists already.
    """
    rq_job = get_current_job()
    if rq_job is None:
        raise RuntimeError("bots.feishu.intake.expand runs inside an RQ worker")
    conn, settings = rq_job.connection, get_settings()
    jobs = batch_images(conn, token, messages)
    with conn.pipeline(transaction=False) as check:
        for job in jobs:
            check.exists(Job.key_for(ocr_job_id(job.job_id)))
        exists = check.execute()
    fresh = [job for job, found in zip(jobs, exists) if not found]
    commands = batch_commands(conn, token, messages)
    with conn.pipeline() as pipe:
        for job in fresh:
            enqueue_image(conn, job, settings, pipeline=pipe)
        for command in commands:
            _enqueue_answer(conn, command, settings, pipe)
        pipe.execute()
    return {"queued": len(fresh), "skipped": len(jobs) - len(fresh), "commands": len(commands)}


def batch_commands(conn: redis.Redis, token: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The commands of a queued batch that are its to answer: those of the messages whose claim it won, once each."""
    mine = owned(conn, [m["claim"] for m in messages], token)
    first = {m["claim"]: i for i, m in reversed(list(enumerate(messages)))}
    return [m["command"] for i, (m, won) in enumerate(zip(messages, mine)) if won and first[m["claim"]] == i and m.get("command")]


def _enqueue_answer(conn: redis.Redis, command: dict[str, Any], settings: Settings, pipe: Pipeline) -> None:
    job_id = answer_job_id(command["bot_id"], command["message_id"])
    if conn.exists(Job.key_for(job_id)):  # a retried expansion: answered, or being answered, already
        return
    delivery_queue(conn, settings).enqueue_call(
        ANSWER, args=(command,), job_id=job_id, timeout=settings.job_timeout, retry=retry_policy(settings),
        result_ttl=settings.blob_ttl, failure_ttl=settings.blob_ttl * 4,
        description=f"feishu bot {command['bot_id']}: answer {command['kind']} in chat {command['chat_id']}", pipeline=pipe,
    )  # fmt: skip
