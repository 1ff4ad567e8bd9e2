"""Delivery to Notion through RQ, as the hub runs it: burst workers, retries, a killed worker, other sinks alongside."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from PIL import Image
from rq.registry import StartedJobRegistry

from ocr_core import queue, store
from ocr_core.job import ImageJob, OcrResult
from ocrhub.settings import Settings
from ocrhub.worker import build_worker
from sinks.local import LocalStore
from sinks.notion.page import row_key
from tests.emulators.notion import NotionEmulator

LONG_TEXT = "\n".join(f"{i:03d} " + "长文本 line of recognised text " * 3 for i in range(250))
WORKER = (
    "from ocrhub import runtime\n"
    "from ocrhub.settings import get_settings\n"
    "from ocrhub.worker import build_worker\n"
    "settings = get_settings()\n"
    "build_worker(runtime.connect(settings), settings).work(burst=True)\n"
)


@pytest.fixture
def notion() -> Iterator[NotionEmulator]:
    with NotionEmulator() as emulator:
        yield emulator


def image_bytes(n: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64 + n, 48), (n % 256, 80, 160)).save(out, "PNG")
    return out.getvalue()


def text_for(n: int) -> str:
    return LONG_TEXT if n % 10 == 0 else f"Receipt {n}\ntotal {n * 3}.00\nthank you"


def stage(conn: redis.Redis, settings: Settings, count: int, sinks: tuple[str, ...] = ("kb",), text=text_for) -> list[ImageJob]:
    """Results and images as the pipeline leaves them, with their deliveries queued."""
    jobs = []
    for n in range(count):
        job = ImageJob(
            platform="feishu", bot_id="cli_test", chat_id="oc_team", message_id=f"om_{n // 2}", image_key=f"img_{n}",
            sender="ou_alice", sent_at="2025-03-04T05:06:07+00:00", index=n % 2,
        )
        store.save_result(conn, OcrResult(job=job, text=text(n), lines=(), engine="rapidocr", image_sha256=f"{n:064d}"), settings.blob_ttl)
        store.save_image(conn, job.job_id, image_bytes(n), settings.blob_ttl)
        for sink in sinks:
            queue.enqueue_delivery(conn, job.job_id, sink, settings)
        jobs.append(job)
    return jobs


def body_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.strip())


def assert_one_complete_row_each(notion: NotionEmulator, source_id: str, jobs: list[ImageJob], text=text_for) -> None:
    rows = notion.workspace.rows(source_id)
    keys = [notion.workspace.cell(row, "Message ID") for row in rows]
    assert sorted(keys) == sorted(row_key(job) for job in jobs), "exactly one row per image"
    by_key = dict(zip(keys, rows))
    for n, job in enumerate(jobs):
        row = by_key[row_key(job)]
        assert notion.workspace.body_text(row["id"]) == body_lines(text(n))
        assert len(notion.workspace.cell(row, "Image")) == 1
        assert [b["type"] for b in notion.workspace.blocks(row["id"])].count("image") == 1


def test_100_images_under_injected_faults_give_exactly_100_rows(notion: NotionEmulator, conn: redis.Redis, settings: Settings, set_env) -> None:
    database_id, source_id = notion.workspace.add_database()
    settings = set_env(retry_intervals="0,0,0,0", sinks=json.dumps({"kb": notion.sink_url(database_id, timeout=0.4)}))
    jobs = stage(conn, settings, 100)
    notion.chaos(0.15, seed=7, statuses=(429, 500, 502, 503, 529), slow=0.6)

    build_worker(conn, settings).work(burst=True)

    notion.calm()
    assert notion.injected >= 50
    assert queue.delivery_queue(conn, settings).failed_job_registry.count == 0
    assert_one_complete_row_each(notion, source_id, jobs)


@pytest.mark.parametrize("op", ["pages.create", "blocks.children.append"])
def test_a_worker_killed_mid_delivery_leaves_one_row(op: str, notion: NotionEmulator, conn: redis.Redis, settings: Settings, set_env) -> None:
    database_id, source_id = notion.workspace.add_database()
    settings = set_env(retry_intervals="0,0,0,0", sinks=json.dumps({"kb": notion.sink_url(database_id)}))
    jobs = stage(conn, settings, 1, text=lambda n: LONG_TEXT)
    gate = notion.hold(op)
    worker = subprocess.Popen([sys.executable, "-c", WORKER], env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not gate.reached.wait(60):
            raise AssertionError(f"the worker never reached {op}: {worker.stderr.read().decode()[-2000:]}")
        worker.kill()
        worker.wait(10)
    finally:
        gate.release()
        if worker.poll() is None:
            worker.kill()
        worker.stderr.close()
    [row] = notion.workspace.rows(source_id)
    assert notion.workspace.body_text(row["id"]) != body_lines(LONG_TEXT), "killed before the body was complete"

    # What the hub's maintenance does once the dead worker's job times out: retry it.
    deliveries = queue.delivery_queue(conn, settings)
    StartedJobRegistry(queue=deliveries).cleanup(timestamp=time.time() + 24 * 3600)
    assert deliveries.count == 1
    build_worker(conn, settings).work(burst=True)

    assert_one_complete_row_each(notion, source_id, jobs, text=lambda n: LONG_TEXT)
    assert deliveries.failed_job_registry.count == 0


def test_two_workers_killed_mid_run_under_faults(notion: NotionEmulator, conn: redis.Redis, settings: Settings, set_env) -> None:
    database_id, source_id = notion.workspace.add_database()
    settings = set_env(retry_intervals="0,0,0,0", sinks=json.dumps({"kb": notion.sink_url(database_id, timeout=0.4, rate=30)}))
    jobs = stage(conn, settings, 40)
    notion.chaos(0.1, seed=11, statuses=(429, 500, 529), slow=0.6)
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while len(notion.workspace.rows(source_id)) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        gate = notion.hold("pages.create")
        assert gate.reached.wait(30), "no worker reached a create"
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(10)
        notion.calm()
        notion.chaos(0.1, seed=12, statuses=(429, 500, 529), slow=0.6)
    gate.release()
    assert 12 <= len(notion.workspace.rows(source_id)) < 40

    deliveries = queue.delivery_queue(conn, settings)
    StartedJobRegistry(queue=deliveries).cleanup(timestamp=time.time() + 24 * 3600)
    build_worker(conn, settings).work(burst=True)

    notion.calm()
    assert deliveries.failed_job_registry.count == 0
    assert_one_complete_row_each(notion, source_id, jobs)


@pytest.mark.parametrize(
    ("arrange", "message"),
    [
        (lambda w: w.add_database(shared=False), "share it with the integration"),
        (lambda w: w.add_database(properties={"Name": "title", "Text": "rich_text"}), "property 'Message ID' (Text, column message_id) is missing"),
    ],
    ids=["not-shared", "missing-column"],
)
def test_a_notion_that_cannot_work_fails_once_and_the_other_sinks_deliver(
    arrange, message: str, notion: NotionEmulator, conn: redis.Redis, settings: Settings, set_env
) -> None:
    database_id, _ = arrange(notion.workspace)
    settings = set_env(retry_intervals="0,0,0,0", sinks=json.dumps({"kb": notion.sink_url(database_id)}))
    jobs = stage(conn, settings, 3, sinks=("kb", "local"))

    build_worker(conn, settings).work(burst=True)

    local = LocalStore(settings.data_dir / "results.sqlite3")
    assert local.count() == 3
    failed = queue.delivery_queue(conn, settings).failed_job_registry
    assert sorted(failed.get_job_ids()) == sorted(queue.delivery_job_id(job.job_id, "kb") for job in jobs)
    for job_id in failed.get_job_ids():
        job = queue.delivery_queue(conn, settings).fetch_job(job_id)
        assert message in job.latest_result().exc_string
        assert notion.token not in job.latest_result().exc_string
        assert job.retries_left == 0, "a configuration error is not retried"
    assert notion.count("pages.create") == 0
    assert notion.count("users.me") == 1, "the failed check is remembered, not asked again for every queued image"
