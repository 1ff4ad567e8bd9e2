"""End to end with `ocrhub up`: images posted in an emulated Feishu group become rows of an emulated Notion database.

The issue's "Done when", in two runs: real OCR of a few images, one a page of over 12,000 characters,
each a complete row (every property, the whole text in the body, the image attached); then 100 images
through injected 429s, 500s, timeouts and a worker killed mid-delivery, and exactly 100 rows.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import pytest
from PIL import Image
from rq import Worker

from ocr_core.job import ImageJob
from ocr_core.queue import delivery_job_id
from sinks.local import LocalStore
from sinks.notion.page import row_key
from tests.bots.feishu.fixtures import app, events, feishu  # noqa: F401 - fixtures
from tests.emulators.feishu import App, Events, FeishuEmulator, chat_id
from tests.emulators.notion import NotionEmulator
from tests import hub_process
from tests.hub_process import Hub, settled
from tests.imagegen import encode, text_image

ROUTES = json.dumps({"feishu:*": ["feishu-reply", "local", "kb"]})
# Words of narrow letters: the recogniser's time grows with the printed width, and the page must pass 12,000 characters.
NARROW = ("fill", "tilt", "jilt", "rift", "lift", "silt", "frill", "trill", "little", "filter", "tiff", "lilt", "fit", "tier", "rill", "stilt")
FIRST_CHUNK = 99  # paragraphs sent with pages.create, beside the image block; the rest go 100 per append

T = TypeVar("T")


@dataclass(frozen=True)
class Posted:
    """One image as the group saw it: the job the hub makes of it, the bytes, the event it came in."""

    job: ImageJob
    data: bytes
    event: dict


@pytest.fixture
def notion() -> Iterator[NotionEmulator]:
    with NotionEmulator() as emulator:
        yield emulator


@contextmanager
def running_hub(tmp_path: Path, feishu: FeishuEmulator, app: App, kb: str, **extra: str) -> Iterator[Hub]:
    """`ocrhub up` routing every Feishu chat to the reply, the local store and the Notion sink `kb`; stopped with Ctrl-C."""
    with hub_process.running_hub(
        tmp_path,
        OCRHUB_WORKERS="2",
        **feishu.hub_settings(app),
        OCRHUB_SINKS=json.dumps({"kb": kb}),
        OCRHUB_ROUTES=ROUTES,
        **extra,
    ) as hub:
        yield hub


def wait_until(check: Callable[[], T], timeout: float, what: str, hub: Hub, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}\n{hub.tail()}"
        time.sleep(every)
    return value


def posted(event: dict, images: list[bytes]) -> list[Posted]:
    message = event["event"]["message"]
    content = json.loads(message["content"])
    keys = [content["image_key"]] if "image_key" in content else [e["image_key"] for p in content["content"] for e in p if e["tag"] == "img"]
    assert len(keys) == len(images)
    return [
        Posted(ImageJob("feishu", "default", message["chat_id"], message["message_id"], key, index=index), data, event)
        for index, (key, data) in enumerate(zip(keys, images))
    ]


def picture(*lines: str) -> bytes:
    return encode(text_image(list(lines), size=48), "PNG")


def page_lines(count: int) -> list[str]:
    rng = random.Random(3)
    return [f"{n:03d} " + " ".join(rng.choice(NARROW) for _ in range(10)) for n in range(count)]


def swatch(n: int) -> bytes:
    """A plain image of its own size: the counting engine reads it as "size WxH"."""
    out = io.BytesIO()
    Image.new("RGB", (64 + n, 48), (n * 37 % 256, 90, 160)).save(out, "PNG")
    return out.getvalue()


def words(text: str) -> str:
    return " ".join(text.lower().split())


def nonblank(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.strip())


def upload_id(file_url: str) -> str:
    # The emulator names an attached upload https://files.emulated/<upload id>/<file name>.
    return file_url.split("/")[-2]


def rows_by_key(notion: NotionEmulator, source_id: str) -> dict[str, dict]:
    rows = notion.workspace.rows(source_id)
    keys = [notion.workspace.cell(row, "Message ID") for row in rows]
    duplicated = [k for k, n in Counter(keys).items() if n > 1]
    assert not duplicated, f"more than one row for {duplicated}"
    return dict(zip(keys, rows))


def assert_complete_row(notion: NotionEmulator, row: dict, image: Posted, text: str, engine: str) -> None:
    """Every property of the row, the whole text as the body and the image attached, as both file and block."""
    w = notion.workspace
    job = image.job
    assert text.strip(), f"nothing recognised in {job}"
    assert w.cell(row, "Name") == text.strip().splitlines()[0].strip()
    preview = w.cell(row, "Text")
    if len(text) <= 2000:
        assert preview == text
    else:
        assert len(preview) == 2000 and preview.endswith("…") and text.startswith(preview[:-1])
    assert w.cell(row, "Chat") == job.chat_id
    assert w.cell(row, "Sender") == image.event["event"]["sender"]["sender_id"]["open_id"]
    sent = datetime.fromtimestamp(int(image.event["event"]["message"]["create_time"]) // 1000, timezone.utc)
    assert datetime.fromisoformat(w.cell(row, "Time")["start"]) == sent
    assert w.cell(row, "Source") is None, "a Feishu message has no source URL"
    assert w.cell(row, "Engine") == {"name": engine}
    assert w.cell(row, "Message ID") == row_key(job)

    [attached] = w.cell(row, "Image")
    assert w.uploads[upload_id(attached["file"]["url"])]["data"] == image.data
    blocks = w.blocks(row["id"])
    assert [b["type"] for b in blocks].count("image") == 1 and blocks[0]["type"] == "image", "the image heads the body, once"
    assert upload_id(blocks[0]["image"]["file"]["url"]) == upload_id(attached["file"]["url"])
    assert w.body_text(row["id"]) == nonblank(text)


def test_group_images_become_complete_notion_rows(tmp_path: Path, feishu: FeishuEmulator, app: App, events: Events, notion: NotionEmulator):
    database_id, source_id = notion.workspace.add_database()
    group = chat_id()
    drawn = page_lines(220)
    page = encode(text_image(drawn, size=24, margin=20), "PNG")
    tall = events.image(group, page)
    single = picture("harbor window 42")
    short = events.image(group, single)
    pair = [picture("copper lantern"), picture("velvet rocket")]
    post = events.post(group, ["two receipts", *pair])
    images = posted(tall, [page]) + posted(short, [single]) + posted(post, pair)

    # Two threads per engine: the page is most of the work, and while one worker reads it the other has little to do.
    with running_hub(tmp_path, feishu, app, notion.sink_url(database_id), OCRHUB_ENGINE_THREADS="2", OCRHUB_RETRY_INTERVALS="1,2,4") as hub:
        webhook = f"{hub.url}/feishu/events"
        for event in (tall, short, post):
            assert events.deliver(webhook, event).json()["status"] == "queued"
        wait_until(lambda: len(feishu.all_replies()) >= 4 and len(notion.workspace.rows(source_id)) >= 4 and settled(hub), 240, "4 replies and 4 rows", hub)
        local = LocalStore(hub.data / "results.sqlite3")
        failed = hub.get("/api/failed").json()["failed"]
    assert hub.process.returncode == 0, hub.tail()
    assert failed == []

    texts = {image.job.job_id: local.get(image.job.job_id).text for image in images}
    rows = rows_by_key(notion, source_id)
    assert sorted(rows) == sorted(row_key(image.job) for image in images), "exactly one row per image"
    for image in images:
        assert_complete_row(notion, rows[row_key(image.job)], image, texts[image.job.job_id], "rapidocr")

    page_text = texts[images[0].job.job_id]
    assert len(page_text) >= 12_000
    read = set(page_text.splitlines())
    assert sum(line in read for line in drawn) >= 0.95 * len(drawn), "the page was read, not made up"
    paragraphs = len(nonblank(page_text).splitlines())
    # The body went in pieces: the create carried the first paragraphs, appends of 100 the rest.
    assert notion.count("blocks.children.append") == math.ceil((paragraphs - FIRST_CHUNK) / 100) >= 2
    assert words(texts[images[1].job.job_id]) == "harbor window 42"
    assert [words(texts[image.job.job_id]) for image in images[2:]] == ["copper lantern", "velvet rocket"]

    assert len(feishu.all_replies()) == 4
    [page_reply] = feishu.replies_to(tall["event"]["message"]["message_id"])
    assert page_reply.text == page_text
    [short_reply] = feishu.replies_to(short["event"]["message"]["message_id"])
    assert words(short_reply.text) == "harbor window 42"
    post_replies = feishu.replies_to(post["event"]["message"]["message_id"])
    assert sorted(words(r.text) for r in post_replies) == ["image 1: copper lantern", "image 2: velvet rocket"]

    # Each card links its own Notion row, whichever of the two deliveries finished first.
    row_url = {key: f"https://www.notion.so/{row['id'].replace('-', '')}" for key, row in rows.items()}
    assert page_reply.links == [row_url[row_key(images[0].job)]]
    assert short_reply.links == [row_url[row_key(images[1].job)]]
    assert sorted(link for r in post_replies for link in r.links) == sorted(row_url[row_key(i.job)] for i in images[2:])


def send_all(events: Events, webhook: str, batch: list[dict]) -> list[tuple[str, str]]:
    """(message id, status) for each event, sent side by side as Feishu's pushes arrive."""

    def send(event: dict) -> tuple[str, str]:
        answer = events.deliver(webhook, event)
        assert answer.status_code == 200, answer.text
        return event["event"]["message"]["message_id"], answer.json()["status"]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(send, batch))


def faults_seen(notion: NotionEmulator) -> Counter[str]:
    seen: Counter[str] = Counter()
    for call in list(notion.calls):
        if call.injected:
            seen["429" if call.status == 429 else "5xx" if call.status >= 500 and call.status != 504 else "timeout"] += 1
    return seen


def test_100_images_through_faults_and_a_killed_worker_give_exactly_100_rows(
    tmp_path: Path, feishu: FeishuEmulator, app: App, events: Events, notion: NotionEmulator
):
    database_id, source_id = notion.workspace.add_database()
    groups = [chat_id() for _ in range(5)]
    images: list[Posted] = []
    messages: list[dict] = []
    for m in range(50):
        group = groups[m % len(groups)]
        if m % 2:
            data = [swatch(len(images) + i) for i in range(3)]
            event = events.post(group, [f"batch {m}", *data])
        else:
            data = [swatch(len(images))]
            event = events.image(group, data[0])
        messages.append(event)
        images += posted(event, data)
    assert len(images) == 100
    # Feishu pushes some events again, as it does when an answer is slow.
    pushes = messages + messages[::5]
    random.Random(5).shuffle(pushes)

    engine = {"OCRHUB_OCR_ENGINE": "tests.fakes:CountingEngine"}
    # Answers later than the sink's 0.4 s timeout are timeouts to it; the write may still have happened.
    kb = notion.sink_url(database_id, timeout=0.4)
    with running_hub(tmp_path, feishu, app, kb, OCRHUB_RETRY_INTERVALS="0,1,1,2,2", OCRHUB_JOB_TIMEOUT="60", **engine) as hub:
        notion.chaos(0.15, seed=21, statuses=(429, 500, 503), slow=0.6)
        feishu.throttle("reply", 3)
        feishu.throttle("resource", 3)
        answers = send_all(events, f"{hub.url}/feishu/events", pushes)
        statuses: dict[str, Counter[str]] = {}
        for message_id, status in answers:
            statuses.setdefault(message_id, Counter())[status] += 1
        assert all(s["queued"] == 1 and s["queued"] + s["duplicate"] == sum(s.values()) for s in statuses.values()), statuses
        assert len(statuses) == 50

        # Mid-run, catch a worker inside a delivery: its page created, the answer held, its body not yet complete.
        wait_until(lambda: len(notion.workspace.rows(source_id)) >= 30, 120, "30 rows", hub, every=0.05)
        gate = notion.hold("pages.create")
        assert gate.reached.wait(60), f"no delivery reached pages.create\n{hub.tail()}"
        caught = gate.body["properties"]["Message ID"]["rich_text"][0]["text"]["content"]
        delivery = delivery_job_id(caught.rsplit("/", 1)[1], "kb")
        [victim] = [w for w in Worker.all(connection=hub.conn) if w.get_current_job_id() == delivery]
        os.kill(victim.pid, signal.SIGKILL)
        gate.release()

        wait_until(lambda: settled(hub), 150, "the queues drained", hub, every=0.5)
        notion.calm()
        workers = Worker.all(connection=hub.conn)
        failed = hub.get("/api/failed").json()["failed"]
        local = LocalStore(hub.data / "results.sqlite3")
        texts = {image.job.job_id: (stored.text if (stored := local.get(image.job.job_id)) else "") for image in images}
    assert hub.process.returncode == 0, hub.tail()
    log = hub.log.read_text(errors="replace")
    assert f"died; its jobs go back to the queue: {delivery}" in log
    assert len(workers) == 2 and victim.pid not in [w.pid for w in workers], "the killed worker was replaced"
    assert failed == []

    seen = faults_seen(notion)
    assert seen["429"] >= 5 and seen["5xx"] >= 5 and seen["timeout"] >= 5, seen

    rows = rows_by_key(notion, source_id)
    assert len(rows) == 100
    assert sorted(rows) == sorted(row_key(image.job) for image in images)
    for image in images:
        assert texts[image.job.job_id] == f"size {Image.open(io.BytesIO(image.data)).width}x48"
        assert_complete_row(notion, rows[row_key(image.job)], image, texts[image.job.job_id], "tests.fakes:CountingEngine")
    assert caught in rows

    replies = feishu.all_replies()
    assert len(replies) == 100 and len({r.uuid for r in replies}) == 100
    for event in messages:
        mine = [i for i in images if i.event is event]
        got = sorted(r.text for r in feishu.replies_to(event["event"]["message"]["message_id"]))
        labelled = len(mine) > 1
        assert got == sorted((f"Image {i.job.index + 1}:\n" if labelled else "") + texts[i.job.job_id] for i in mine)
