"""Faults against `ocrhub up` with the Feishu and Notion emulators: killed workers, a killed Redis, a killed
hub, an unclean stop, a second hub, and a soak with duplicates and bad images. Each acknowledged image
reaches every routed sink (reply, Notion row, local store) exactly once.

    pytest -m faults tests/faults        # the whole suite, about 5 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rq import Worker

from ocr_core.queue import delivery_job_id, ocr_job_id
from ocrhub.redis_server import free_port, pid_alive
from tests import fakes
from tests.bots.feishu.fixtures import app, events, feishu  # noqa: F401 - fixtures
from tests.emulators.feishu import App, Events, FeishuEmulator, chat_id
from tests.emulators.notion import NotionEmulator
from tests.faults.flow import ROUTES, Posted, acknowledge, assert_each_delivered_once, post_image, wait_until
from tests.hub_process import Hub, hub_environment, settled, start_hub, stop_hub

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.fixture
def notion() -> Iterator[NotionEmulator]:
    with NotionEmulator() as emulator:
        yield emulator


def environment(tmp_path: Path, feishu: FeishuEmulator, app: App, notion: NotionEmulator, database_id: str, **extra: str) -> dict[str, str]:
    settings = {
        "OCRHUB_WORKERS": "2",
        "OCRHUB_OCR_ENGINE": "tests.fakes:CountingEngine",
        "OCRHUB_RETRY_INTERVALS": "1,1,2,2,3",
        "OCRHUB_JOB_TIMEOUT": "60",
        **feishu.hub_settings(app),
        "OCRHUB_SINKS": json.dumps({"kb": notion.sink_url(database_id)}),
        "OCRHUB_ROUTES": ROUTES,
    }
    return hub_environment(tmp_path, **{**settings, **extra})


def workers_ready(hub: Hub, count: int = 2) -> list[Worker]:
    def ready() -> list[Worker] | None:
        workers = [w for w in Worker.all(connection=hub.conn) if "." not in w.name]
        return workers if len(workers) >= count else None

    return wait_until(ready, 120, "workers registered", hub)


def test_workers_killed_mid_ocr_and_mid_delivery(tmp_path: Path, feishu: FeishuEmulator, app: App, events: Events, notion: NotionEmulator) -> None:
    database_id, source_id = notion.workspace.add_database()
    env = environment(tmp_path, feishu, app, notion, database_id, OCRHUB_OCR_ENGINE="tests.fakes:HoldingEngine")
    hub = start_hub(tmp_path, env)
    try:
        workers_ready(hub)
        group = chat_id()
        hub.conn.set(fakes.HOLD_KEY, 1)
        posted = [post_image(events, group, n) for n in range(6)]
        for image in posted:
            assert acknowledge(events, f"{hub.url}/feishu/events", image.event) == "queued"

        # Mid-OCR: a worker inside the engine with an image in hand.
        reading = wait_until(lambda: [w for w in Worker.all(connection=hub.conn) if (w.get_current_job_id() or "").startswith("ocr-")], 60, "a job in the engine", hub)
        victim = reading[0]
        os.kill(victim.pid, signal.SIGKILL)
        # Mid-delivery: a worker whose Notion page is created but whose answer has not come back.
        gate = notion.hold("pages.create")
        hub.conn.delete(fakes.HOLD_KEY)
        assert gate.reached.wait(90), hub.tail()
        caught = gate.body["properties"]["Message ID"]["rich_text"][0]["text"]["content"]
        delivery = delivery_job_id(caught.rsplit("/", 1)[1], "kb")
        holder = wait_until(lambda: [w for w in Worker.all(connection=hub.conn) if w.get_current_job_id() == delivery], 30, "the delivery's worker", hub)
        os.kill(holder[0].pid, signal.SIGKILL)
        gate.release()

        wait_until(lambda: settled(hub), 180, "the queues drained", hub, every=0.5)
        failed = hub.get("/api/failed").json()["failed"]
    finally:
        stop_hub(hub)
    log = hub.log.read_text(errors="replace")
    assert failed == []
    assert log.count("died; its jobs go back to the queue") >= 2, log[-4000:]
    assert_each_delivered_once(feishu, notion, source_id, hub.data, posted)


def test_redis_killed_mid_flow_is_restarted_and_loses_nothing(tmp_path: Path, feishu: FeishuEmulator, app: App, events: Events, notion: NotionEmulator) -> None:
    database_id, source_id = notion.workspace.add_database()
    hub = start_hub(tmp_path, environment(tmp_path, feishu, app, notion, database_id))
    try:
        workers_ready(hub)
        groups = [chat_id() for _ in range(3)]
        posted = [post_image(events, groups[n % 3], n) for n in range(30)]
        redis_pid = hub.child_pid("redis-server")
        acknowledged = []

        def send(image: Posted) -> None:
            acknowledge(events, f"{hub.url}/feishu/events", image.event)
            acknowledged.append(image)
            time.sleep(0.1)

        with ThreadPoolExecutor(2) as pool:
            running = [pool.submit(send, image) for image in posted]
            wait_until(lambda: len(acknowledged) >= 10, 60, "10 events acknowledged", hub)
            os.kill(redis_pid, signal.SIGKILL)  # between writes, with deliveries in flight
            for future in running:
                future.result()
        wait_until(lambda: hub.child_pid("redis-server") != redis_pid, 60, "redis-server restarted", hub)
        wait_until(lambda: settled(hub), 180, "the queues drained", hub, every=0.5)
        failed = hub.get("/api/failed").json()["failed"]
        assert hub.process.poll() is None, "the hub itself stayed up"
    finally:
        stop_hub(hub)
    log = hub.log.read_text(errors="replace")
    assert "redis-server exited" in log and "redis-server is back" in log, log[-4000:]
    assert hub.process.returncode == 0, log[-4000:]
    assert failed == []
    assert_each_delivered_once(feishu, notion, source_id, hub.data, posted)


def test_a_hub_killed_outright_takes_its_children_and_the_next_one_delivers_the_backlog_once(
    tmp_path: Path, feishu: FeishuEmulator, app: App, events: Events, notion: NotionEmulator
) -> None:
    database_id, source_id = notion.workspace.add_database()
    env = environment(tmp_path, feishu, app, notion, database_id, OCRHUB_OCR_ENGINE="tests.fakes:HoldingEngine")
    first = start_hub(tmp_path, env)
    try:
        workers_ready(first)
        first.conn.set(fakes.HOLD_KEY, 1)
        posted = [post_image(events, chat_id(), n) for n in range(8)]
        for image in posted:
            assert acknowledge(events, f"{first.url}/feishu/events", image.event) == "queued"
        wait_until(lambda: [w for w in Worker.all(connection=first.conn) if w.get_current_job_id()], 60, "a job in hand", first)
        children = [c["pid"] for c in first.published()["children"]]
        first.process.kill()
        first.process.wait()
        # Each child goes with the hub: no worker left on a Redis the next hub restarts, no second redis-server.
        deadline = time.monotonic() + 20
        while any(pid_alive(pid) for pid in children):
            assert time.monotonic() < deadline, [p for p in children if pid_alive(p)]
            time.sleep(0.1)
    finally:
        stop_hub(first)

    second = start_hub(tmp_path, env, log_name="hub-2.log")
    try:
        second.conn.delete(fakes.HOLD_KEY)  # kept in the append-only file, like the backlog
        wait_until(lambda: settled(second), 180, "the backlog delivered", second, every=0.5)
        failed = second.get("/api/failed").json()["failed"]
    finally:
        stop_hub(second)
    assert failed == []
    assert_each_delivered_once(feishu, notion, source_id, second.data, posted)


def test_after_an_unclean_stop_scheduled_retries_run_on_time(tmp_path: Path, feishu: FeishuEmulator, app: App, events: Events, notion: NotionEmulator) -> None:
    database_id, source_id = notion.workspace.add_database()
    env = environment(tmp_path, feishu, app, notion, database_id, OCRHUB_RETRY_INTERVALS="8,8,8")
    first = start_hub(tmp_path, env)
    try:
        workers_ready(first)
        notion.chaos(1.0, statuses=(500,))  # every delivery to Notion fails: its retry is scheduled 8 s later
        image = post_image(events, chat_id(), 1)
        acknowledge(events, f"{first.url}/feishu/events", image.event)
        delivery = delivery_job_id(image.job.job_id, "kb")
        wait_until(lambda: first.conn.hget(f"rq:job:{delivery}", "status") == b"scheduled", 60, "the delivery's retry scheduled", first)
        first.process.send_signal(signal.SIGINT)
        time.sleep(0.3)
        first.process.send_signal(signal.SIGINT)  # and again: stop now, without waiting
        first.process.wait(60)
    finally:
        stop_hub(first)
    stderr_tail = first.log.read_text(errors="replace").split("ocrhub stopped")[-1]
    assert "Traceback" not in stderr_tail, stderr_tail

    notion.calm()
    second = start_hub(tmp_path, env, log_name="hub-2.log")
    try:
        started = time.monotonic()
        wait_until(lambda: notion.workspace.rows(source_id), 40, "the retried delivery's row", second, every=0.2)
        took = time.monotonic() - started
    finally:
        stop_hub(second)
    print(f"the scheduled retry ran {took:.1f} s after the new hub answered")
    assert took < 30, f"the retry ran {took:.0f} s after the restart (RQ alone waits for its 10-minute maintenance)"


def test_one_hub_per_data_folder(tmp_path: Path) -> None:
    env = hub_environment(tmp_path, OCRHUB_WORKERS="1")
    first = start_hub(tmp_path, env)
    try:
        before = first.published()
        second_env = {**env, "OCRHUB_API_PORT": str(free_port())}
        refused = subprocess.run([sys.executable, "-m", "ocrhub.cli", "up"], env=second_env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0
        assert f"pid {first.process.pid}" in refused.stderr and f":{env['OCRHUB_API_PORT']}" in refused.stderr, refused.stderr
        assert first.published() == before, "the refused hub left the running one's hub.json alone"
        assert first.get("/healthz").status_code == 200
        assert len(redis_servers_on(first.data / "redis")) == 1
    finally:
        stop_hub(first)


def redis_servers_on(folder: Path) -> list[int]:
    """redis-server processes working in `folder` (it renames its own command line, but works in its --dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if (proc / "comm").read_text().strip() == "redis-server" and os.readlink(proc / "cwd") == str(folder):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
def test_soak_of_300_events_with_duplicates_and_bad_images(tmp_path: Path, feishu: FeishuEmulator, app: App, events: Events, notion: NotionEmulator) -> None:
    database_id, source_id = notion.workspace.add_database()
    rng = random.Random(9)
    groups = [chat_id() for _ in range(6)]
    posted = [post_image(events, groups[n % len(groups)], n, bad=n % 10 == 7) for n in range(300)]
    pushes = [p.event for p in posted] + [p.event for p in rng.sample(posted, 60)]  # Feishu re-sends some
    rng.shuffle(pushes)
    hub = start_hub(tmp_path, environment(tmp_path, feishu, app, notion, database_id))
    try:
        workers_ready(hub)
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda event: acknowledge(events, f"{hub.url}/feishu/events", event), pushes))
        assert statuses.count("queued") == 300, statuses
        wait_until(lambda: settled(hub), 240, "the queues drained", hub, every=1.0)
        queues = hub.get("/api/queue").json()
        failed = hub.get("/api/failed").json()["failed"]
    finally:
        stop_hub(hub)
    assert all(q["queued"] == q["started"] == q["scheduled"] == 0 for q in queues.values()), queues
    # A bad image fails its OCR job for good (after its error reply): nothing else may.
    assert sorted(f["id"] for f in failed) == sorted(ocr_job_id(p.job.job_id) for p in posted if not p.width)
    assert_each_delivered_once(feishu, notion, source_id, hub.data, posted)
    log = hub.log.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]


def test_an_api_port_in_use_is_refused_at_start_not_retried_for_ever(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**hub_environment(tmp_path, OCRHUB_WORKERS="1"), "OCRHUB_API_PORT": str(taken.getsockname()[1])}
        refused = subprocess.run([sys.executable, "-m", "ocrhub.cli", "up"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "cannot listen on" in refused.stderr and "OCRHUB_API_PORT" in refused.stderr
    assert "ocrhub is up" not in refused.stderr
