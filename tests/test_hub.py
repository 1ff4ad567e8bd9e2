"""`ocrhub up` as an operator runs it: embedded redis-server, API under uvicorn, worker processes, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
import redis

from tests.hub_process import hub_environment, running_hub
from tests.imagegen import encode, text_image, words


def refused_start(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = hub_environment(tmp_path, **settings)
    return subprocess.run([sys.executable, "-m", "ocrhub.cli", "up"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_up_reads_submitted_images_and_stops_cleanly(tmp_path):
    expected = words(31, 3)
    image = tmp_path / "note.png"
    image.write_bytes(encode(text_image([" ".join(expected)]), "PNG"))
    with running_hub(tmp_path, OCRHUB_WORKERS="2") as hub:
        hub_file = json.loads((hub.data / "hub.json").read_text())
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
        client_env["OCRHUB_DATA_DIR"] = str(hub.data)  # finds the hub through the file `ocrhub up` publishes

        submitted = subprocess.run(
            [sys.executable, "-m", "ocrhub.cli", "submit", str(image)], env=client_env, capture_output=True, text=True, timeout=120
        )
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout.split() == expected

        other = words(32, 2)
        upload = hub.post("/api/images", files={"file": ("x.png", encode(text_image([" ".join(other)]), "PNG"))}, timeout=10)
        assert upload.status_code == 202
        job_url = urljoin(hub.url, upload.json()["status_url"])
        deadline = time.monotonic() + 60
        while (body := httpx.get(job_url, headers=hub.headers, timeout=5).json())["status"] != "finished":
            assert body["status"] in {"queued", "started", "scheduled"} and time.monotonic() < deadline, body
            time.sleep(0.2)
        assert body["text"].split() == other

        found = hub.get("/api/search", params={"q": expected[1]}, timeout=5).json()["results"]
        assert [r["text"].split() for r in found] == [expected]
        assert hub.post("/api/images", content=b"").status_code == 400
        assert httpx.get(job_url, timeout=5).status_code == 401  # nothing without the token
        # Private to its owner: the queue, the store and the token.
        assert stat.S_IMODE(hub.data.stat().st_mode) == 0o700
        for path in [hub.data / "api-token", hub.data / "hub.json", hub.data / "results.sqlite3", *(hub.data / "redis").iterdir()]:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    out = hub.log.read_text()
    assert hub.process.returncode == 0, out
    assert "ocrhub stopped" in out
    assert not (hub.data / "hub.json").exists()
    port_of_redis = int(hub_file["redis_url"].rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port_of_redis, socket_connect_timeout=0.5, retry=None).ping()

    # The queue and results survive a restart: the embedded Redis persists under the data folder.
    with running_hub(tmp_path) as hub:
        assert httpx.get(job_url.replace(job_url.split("/api/")[0], hub.url), headers=hub.headers, timeout=5).json()["status"] == "finished"
    assert hub.process.returncode == 0


def test_submit_without_a_running_hub_says_how_to_start_one(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(encode(text_image(["hello"]), "PNG"))
    env = hub_environment(tmp_path)
    result = subprocess.run([sys.executable, "-m", "ocrhub.cli", "submit", str(image)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ocrhub up" in result.stderr and "OCRHUB_API_PORT" in result.stderr  # submit talks to the hub's API


def test_up_refuses_to_start_on_a_broken_sink_with_one_clear_error_each(tmp_path):
    from tests.emulators.notion import NotionEmulator

    with NotionEmulator() as notion:
        hidden, _ = notion.workspace.add_database(shared=False)
        props = {"Name": "title", "Text": "rich_text", "Chat": "rich_text", "Sender": "rich_text", "Time": "date",
                 "Image": "files", "Source": "url", "Engine": "rich_text"}  # no "Message ID"
        partial, _ = notion.workspace.add_database(properties=props)
        result = refused_start(
            tmp_path,
            OCRHUB_SINKS=json.dumps({"hidden": notion.sink_url(hidden), "partial": notion.sink_url(partial)}),
            OCRHUB_ROUTES=json.dumps({"feishu:*": ["feishu-reply", "local", "hidden", "partial"]}),
        )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len([e for e in errors if "sink 'hidden'" in e]) == 1
    assert len([e for e in errors if "sink 'partial'" in e]) == 1
    assert "shar" in next(e for e in errors if "sink 'hidden'" in e)
    assert "Message ID" in result.stderr.split("sink 'partial'")[1].split(" ERROR ")[0]  # the message goes on below
    assert notion.token not in result.stderr
    assert not (tmp_path / "hub" / "hub.json").exists()


def test_a_killed_worker_is_replaced_and_its_job_read_again_at_once(tmp_path):
    from rq import Worker

    from ocr_core.queue import submit_bytes
    from ocr_core.status import job_state
    from ocrhub.settings import load_settings
    from sinks.local import LocalStore
    from tests import fakes

    with running_hub(tmp_path, OCRHUB_WORKERS="1", OCRHUB_OCR_ENGINE="tests.fakes:HoldingEngine") as hub:
        conn = hub.conn
        deadline = time.monotonic() + 60
        while not Worker.all(connection=conn):
            assert time.monotonic() < deadline, hub.tail()
            time.sleep(0.1)
        [worker] = Worker.all(connection=conn)
        conn.set(fakes.HOLD_KEY, 1)
        redis_url = json.loads((hub.data / "hub.json").read_text())["redis_url"]
        settings = load_settings(data_dir=hub.data, redis_url=redis_url)
        job = submit_bytes(conn, encode(text_image(["held"]), "PNG"), settings, source="test")
        # In the worker's hands and inside the engine (the first call was the worker's warm-up).
        while job_state(conn, job.job_id).status != "started" or int(conn.get(fakes.COUNTER_KEY) or 0) < 2:
            assert time.monotonic() < deadline, hub.tail()
            time.sleep(0.05)

        os.kill(worker.pid, signal.SIGKILL)
        conn.delete(fakes.HOLD_KEY)
        deadline = time.monotonic() + 60  # far below the 180 s job timeout RQ alone would wait for
        while job_state(conn, job.job_id).status != "finished":
            assert time.monotonic() < deadline, f"{job_state(conn, job.job_id)}\n{hub.tail()}"
            time.sleep(0.1)
        assert int(conn.get(fakes.COUNTER_KEY)) == 4  # each worker's warm-up, the killed reading, the reading that finished
        assert [w.pid for w in Worker.all(connection=conn)] != [worker.pid]
        deadline = time.monotonic() + 30
        while LocalStore(hub.data / "results.sqlite3").count() != 1:
            assert time.monotonic() < deadline, hub.tail()
            time.sleep(0.1)
    assert hub.process.returncode == 0, hub.tail()
    assert "jobs go back to the queue" in hub.log.read_text()


def test_up_refuses_a_feishu_bot_without_encrypt_key_or_token_instead_of_restarting_forever(tmp_path):
    result = refused_start(tmp_path, OCRHUB_FEISHU_APP_ID="cli_a1b2c3", OCRHUB_FEISHU_APP_SECRET="app-secret-value")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert "neither an Encrypt Key nor a Verification Token" in errors[0]
    assert "restarting" not in result.stderr
    assert "app-secret-value" not in result.stderr
