"""What every fault test does around its fault: post images to an emulated Feishu group, acknowledged as
Feishu insists (re-sent until a 200), and check that each one reached every routed sink exactly once."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
from PIL import Image

from sinks.local import LocalStore
from sinks.notion.page import row_key
from ocr_core.job import ImageJob
from tests.emulators.feishu import Events, FeishuEmulator
from tests.emulators.notion import NotionEmulator
from tests.hub_process import Hub

T = TypeVar("T")
ROUTES = json.dumps({"feishu:*": ["feishu-reply", "local", "kb"]})


@dataclass(frozen=True)
class Posted:
    job: ImageJob
    event: dict
    width: int  # the counting engine reads an image as "size {width}x48"; 0 for a bad image

    @property
    def message_id(self) -> str:
        return self.job.message_id


def swatch(n: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64 + n, 48), (n * 37 % 256, 90, 160)).save(out, "PNG")
    return out.getvalue()


def post_image(events: Events, chat: str, n: int, *, bad: bool = False) -> Posted:
    data = b"\x89PNG\r\n\x1a\n but not an image" + bytes([n % 256]) if bad else swatch(n)
    event = events.image(chat, data)
    message = event["event"]["message"]
    key = json.loads(message["content"])["image_key"]
    return Posted(ImageJob("feishu", "default", message["chat_id"], message["message_id"], key), event, 0 if bad else 64 + n)


def acknowledge(events: Events, url: str, payload: dict, timeout: float = 120.0) -> str:
    """Send until the hub answers 200, as Feishu re-sends after a 503 or no answer; the hub's status for it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = events.deliver(url, payload)
            if answer.status_code == 200:
                return str(answer.json().get("status", ""))
            assert answer.status_code in (502, 503, 504), f"{answer.status_code}: {answer.text}"
        except httpx.HTTPError:
            pass  # the API restarting: Feishu sees no answer and tries again
        assert time.monotonic() < deadline, "the hub never acknowledged an event"
        time.sleep(0.3)


def wait_until(check: Callable[[], T], timeout: float, what: str, hub: Hub, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (httpx.HTTPError, OSError):
            value = None  # type: ignore[assignment]
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}\n{hub.tail()}"
        time.sleep(every)


def assert_each_delivered_once(feishu: FeishuEmulator, notion: NotionEmulator, source_id: str, data: Path, posted: list[Posted]) -> None:
    """One reply per image (the text, or one clear error for a bad one), one Notion row and one stored reading per good image."""
    replies = Counter(r.parent_id for r in feishu.all_replies())
    assert sum(replies.values()) == len(posted), f"{sum(replies.values())} replies for {len(posted)} images"
    rows = Counter(notion.workspace.cell(row, "Message ID") for row in notion.workspace.rows(source_id))
    store = LocalStore(data / "results.sqlite3")
    for image in posted:
        [reply] = feishu.replies_to(image.message_id)
        stored = store.get(image.job.job_id)
        assert stored is not None, f"no stored reading for {image.job.job_id}"
        if image.width:
            assert reply.text == f"size {image.width}x48", reply.text
            assert rows[row_key(image.job)] == 1, f"{rows[row_key(image.job)]} rows for {image.job.job_id}"
            assert stored.text == f"size {image.width}x48"
        else:
            assert "\n" not in reply.text.strip() and "picture" in reply.text.lower(), reply.text  # one friendly sentence
            assert rows[row_key(image.job)] == 0
            assert stored.error
    assert sum(rows.values()) == len([p for p in posted if p.width])
