"""The `ocrhub` command as a user runs it: a real process, real files, real exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from PIL import Image
from rq import Worker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from ocr_core import store
from ocr_core.job import ImageJob, OcrResult
from ocr_core.queue import delivery_queue, enqueue_delivery
from ocrhub import runtime
from ocrhub.redis_server import free_port
from ocrhub.worker import build_worker
from sinks.local import LocalStore
from tests import fakes
from tests.hub_process import ROOT, hub_environment, running_hub
from tests.imagegen import encode, text_image, words


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "ocrhub.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def test_ocr_json_maps_each_path_as_typed_and_reports_failures(tmp_path):
    first, second = words(11, 2), words(12, 2)
    (tmp_path / "a.png").write_bytes(encode(text_image([" ".join(first)]), "PNG"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jpg").write_bytes(encode(text_image([" ".join(second)]), "JPEG", quality=92))
    (tmp_path / "broken.png").write_bytes(encode(text_image(["x"]), "PNG")[:60])

    result = run_cli("ocr", "--json", "./a.png", "sub/b.jpg", "missing.png", "broken.png", cwd=tmp_path, env={"OCRHUB_DATA_DIR": str(tmp_path / "d")})

    assert result.returncode == 1
    texts = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    assert list(texts) == ["./a.png", "sub/b.jpg"]
    assert texts["./a.png"].split() == first
    assert texts["sub/b.jpg"].split() == second
    assert "missing.png" in result.stderr and "broken.png" in result.stderr
    assert "truncated" in result.stderr or "corrupt" in result.stderr


def test_ocr_plain_output_and_success_exit(tmp_path):
    expected = words(21, 3)
    (tmp_path / "one.png").write_bytes(encode(text_image([" ".join(expected)]), "PNG"))
    result = run_cli("ocr", "one.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


def test_invalid_setting_is_refused_naming_it(tmp_path):
    result = run_cli("ocr", "x.png", cwd=tmp_path, env={"OCRHUB_TILE_SIZE": "tiny"})
    assert result.returncode != 0
    assert "OCRHUB_TILE_SIZE" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_file_is_honoured(tmp_path):
    (tmp_path / ".env").write_text("OCRHUB_MAX_IMAGE_BYTES=10\nOCRHUB_FEISHU_APP_SECRET=hunter2\n")
    (tmp_path / "one.png").write_bytes(encode(text_image(["hello"]), "PNG"))
    result = run_cli("ocr", "one.png", cwd=tmp_path)
    assert result.returncode == 1
    assert "10" in result.stderr  # the limit from .env is the one applied
    shown = run_cli("settings", cwd=tmp_path)
    assert "OCRHUB_MAX_IMAGE_BYTES=10" in shown.stdout
    assert "hunter2" not in shown.stdout and "OCRHUB_FEISHU_APP_SECRET=****" in shown.stdout


def test_settings_print_an_env_file_that_reads_back_the_same_with_no_secret(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / ".env").write_text(
        f"OCRHUB_DATA_DIR={tmp_path / 'data'}\n"
        "OCRHUB_RETRY_INTERVALS=5, 30,120\n"
        'OCRHUB_SINKS={"kb": "notion://ntn_secret_token@https://www.notion.so/acme/Inbox-0123456789abcdef0123456789abcdef"}\n'
        'OCRHUB_ROUTES={"feishu:*": ["feishu-reply", "kb"]}\n'
        "OCRHUB_REDIS_URL=redis://:redis-secret@redis:6379/0\n"
        "OCRHUB_API_TOKEN=api-secret-token\n"
    )
    shown = run_cli("settings", cwd=first)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "OCRHUB_RETRY_INTERVALS=5,30,120" in lines
    assert """OCRHUB_SINKS='{"kb": "notion://****@https://www.notion.so/acme/Inbox-0123456789abcdef0123456789abcdef"}'""" in lines
    assert "OCRHUB_REDIS_URL=redis://****@redis:6379/0" in lines
    assert "OCRHUB_API_TOKEN=****" in lines
    for secret in ("ntn_secret_token", "redis-secret", "api-secret-token"):
        assert secret not in shown.stdout
    (second / ".env").write_text(shown.stdout)
    assert run_cli("settings", cwd=second).stdout == shown.stdout


def test_settings_show_what_the_running_hub_uses(tmp_path, settings, redis_server):
    """An unset Redis URL and OCRHUB_WORKERS=0 show the hub's Redis (masked) and its worker processes."""
    env = {"OCRHUB_DATA_DIR": str(settings.data_dir)}
    unreachable = f"redis://:hub-redis-password@127.0.0.1:{free_port()}/0"
    runtime.publish(settings, unreachable, "http://127.0.0.1:8000")  # this test process stands for the hub
    lines = run_cli("settings", cwd=tmp_path, env=env).stdout.splitlines()
    [redis_line] = [line for line in lines if line.startswith("OCRHUB_REDIS_URL=")]
    assert redis_line == f"OCRHUB_REDIS_URL=  # {unreachable.replace(':hub-redis-password', '****')} = the Redis of the hub running now (pid {os.getpid()})"
    assert not [line for line in lines if "None" in line or "hub-redis-password" in line]
    assert f"OCRHUB_WORKERS=0  # {os.cpu_count()} = one per CPU core" in lines  # its Redis is out of reach: say what 0 means

    runtime.publish(settings, redis_server.url, "http://127.0.0.1:8000")
    # One worker process running two jobs at once: RQ lists two workers, the hub runs one process.
    worker_env = {**env, "OCRHUB_REDIS_URL": redis_server.url, "OCRHUB_OCR_ENGINE": "tests.fakes:CountingEngine",
                  "OCRHUB_WORKER_THREADS": "2", "OCRHUB_LOG_JSON": "true", "PYTHONPATH": str(ROOT)}
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "ocrhub.cli", "worker", "--name", "settings-test"], cwd=tmp_path,
                                  env={**{k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}, **worker_env},
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        conn = redis.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 120
        while len(Worker.all(connection=conn)) < 2:
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.2)
        lines = run_cli("settings", cwd=tmp_path, env=env).stdout.splitlines()
    finally:
        worker.kill()  # how it stops is not this test's business
        worker.wait(60)
    assert f"OCRHUB_WORKERS=0  # 1 running in the hub now (pid {os.getpid()})" in lines
    # With OCRHUB_LOG_JSON, RQ's own lines come out as JSON too: nothing else on the worker's output.
    entries = [json.loads(line) for line in worker_log.read_text().splitlines()]
    assert any(e["logger"] == "rq.worker" and "settings-test" in e["message"] for e in entries)
    port = redis_server.url.rsplit(":", 1)[1].split("/")[0]
    assert f"OCRHUB_REDIS_PORT=0  # {port} in use now" in lines



@pytest.mark.parametrize("log_json", [False, True])
def test_serve_logs_uvicorn_through_ocrhubs_handler(tmp_path, redis_server, log_json):
    """uvicorn's own lines (startup, shutdown) come out as ocrhub's: JSON when asked, at INFO by default."""
    env = hub_environment(tmp_path, OCRHUB_REDIS_URL=redis_server.url, OCRHUB_API_HOST="127.0.0.1", OCRHUB_LOG_JSON=str(log_json).lower())
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen([sys.executable, "-m", "ocrhub.cli", "serve"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Uvicorn running on" not in log.read_text():
            assert serve.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        serve.send_signal(signal.SIGTERM)  # as the hub stops it
        serve.wait(60)
    finally:
        serve.kill()
        serve.wait(60)
    lines = log.read_text().splitlines()
    running = f"Uvicorn running on http://127.0.0.1:{env['OCRHUB_API_PORT']}"
    if log_json:
        entries = [json.loads(line) for line in lines]  # every line, uvicorn's too
        assert any(e["logger"] == "uvicorn.error" and e["level"] == "INFO" and e["message"].startswith(running) for e in entries), lines
        assert any(e["logger"] == "uvicorn.error" and e["message"].startswith("Finished server process") for e in entries), lines
    else:
        assert any(re.fullmatch(rf"\S+ \S+ INFO uvicorn\.error: {re.escape(running)}.*", line) for line in lines), lines

def test_search_of_a_missing_store_says_where_it_looked_and_creates_nothing(tmp_path):
    data = tmp_path / "wrong-folder"
    result = run_cli("search", "invoice", cwd=tmp_path, env={"OCRHUB_DATA_DIR": str(data)})
    assert result.returncode == 1
    assert str(data / "results.sqlite3") in result.stderr and "OCRHUB_DATA_DIR" in result.stderr
    assert not data.exists()


def test_search_says_when_nothing_matches(tmp_path):
    data = tmp_path / "data"
    job = ImageJob(platform="feishu", bot_id="b", chat_id="oc_team", message_id="om_1", image_key="img_1", sender="ou_1")
    LocalStore(data / "results.sqlite3").save(
        OcrResult(job=job, text="发票 total 42", lines=(), engine="rapidocr", image_sha256="0" * 64, created_at="2025-03-04T10:00:00+00:00")
    )
    env = {"OCRHUB_DATA_DIR": str(data)}
    missed = run_cli("search", "receipt", cwd=tmp_path, env=env)
    assert missed.returncode == 1 and missed.stdout == ""
    assert "nothing matches 'receipt'" in missed.stderr and "1 texts stored" in missed.stderr
    found = run_cli("search", "发票", cwd=tmp_path, env=env)
    assert found.returncode == 0, found.stderr
    assert "feishu:oc_team" in found.stdout and "发票 total 42" in found.stdout


def test_requeue_hands_a_failed_delivery_back_once_its_sink_is_fixed(tmp_path, settings, set_env, conn, redis_server):
    job = ImageJob(platform="upload", bot_id="cli", chat_id="cli", message_id="m1", image_key="scan.png")
    store.save_result(conn, OcrResult(job=job, text="quarterly numbers", lines=(), engine="rapidocr", image_sha256="1" * 64), settings.blob_ttl)
    enqueue_delivery(conn, job.job_id, "kb", settings)  # no sink named kb yet: fails for good
    build_worker(conn, settings).work(burst=True)
    failed = FailedJobRegistry(queue=delivery_queue(conn, settings))
    [failed_id] = failed.get_job_ids()
    env = {"OCRHUB_REDIS_URL": redis_server.url, "OCRHUB_DATA_DIR": str(settings.data_dir)}

    listed = run_cli("requeue", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"^{failed_id}  ocrhub-deliver  .*no sink named 'kb'", listed.stdout, re.M), listed.stdout
    assert failed.get_job_ids() == [failed_id]  # listing changes nothing

    unknown = run_cli("requeue", "0" * 32, cwd=tmp_path, env=env)
    assert unknown.returncode == 1 and "no failed job" in unknown.stderr
    assert run_cli("requeue", "--all", "--queue", "nope", cwd=tmp_path, env=env).returncode == 2

    kb = tmp_path / "kb.sqlite3"
    fixed = set_env(sinks=json.dumps({"kb": f"local://{kb}"}))
    requeued = run_cli("requeue", job.job_id, cwd=tmp_path, env=env)  # the image's job id finds its failed deliveries
    assert requeued.returncode == 0, requeued.stderr
    assert f"requeued {failed_id} (ocrhub-deliver)" in requeued.stdout
    assert failed.get_job_ids() == []
    assert Job.fetch(failed_id, connection=conn, serializer=JSONSerializer).retries_left == len(settings.retry_intervals)
    build_worker(conn, fixed).work(burst=True)
    assert [row.text for row in LocalStore(kb).search("quarterly")] == ["quarterly numbers"]
    assert run_cli("requeue", "--all", cwd=tmp_path, env=env).stdout == "nothing to requeue: no failed jobs\n"


def test_submit_prints_in_the_order_given_and_sends_the_api_token(tmp_path):
    names = ["a.png", "b.png", "c.png"]
    for name, width in zip(names, (640, 800, 960)):
        (tmp_path / name).write_bytes(encode(Image.new("RGB", (width, 200), "white"), "PNG"))
    token = "hub-api-token-0123456789"
    with running_hub(tmp_path, OCRHUB_WORKERS="1", OCRHUB_OCR_ENGINE="tests.fakes:DeferringEngine", OCRHUB_API_TOKEN=token) as hub:
        env = {"OCRHUB_DATA_DIR": str(hub.data), "OCRHUB_API_TOKEN": token}
        result = run_cli("submit", *names, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr + hub.tail()
        # a and b were put off by the engine, so c finished first; the output keeps the order given.
        assert int(hub.conn.get(fakes.DEFER_KEY)) == 5
        shown = re.findall(r"^==> (\S+) <==\nsize (\d+)x\d+$", result.stdout, re.M)
        assert [name for name, _ in shown] == names
        widths = [int(width) for _, width in shown]
        assert widths == sorted(set(widths)), result.stdout

        refused = run_cli("submit", "a.png", cwd=tmp_path, env={**env, "OCRHUB_API_TOKEN": "not-the-token"})
        assert refused.returncode == 1 and "refused the API token" in refused.stderr
        assert "not-the-token" not in refused.stderr and token not in refused.stderr


def test_admin_set_password_stores_a_private_hash_and_refuses_a_weak_one(tmp_path):
    env = {"OCRHUB_DATA_DIR": str(tmp_path / "data")}
    weak = subprocess.run(
        [sys.executable, "-m", "ocrhub.cli", "admin", "set-password", "--stdin"], input="changeme123\n",
        cwd=tmp_path, env={**{k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert weak.returncode != 0 and "refused" in weak.stderr and not (tmp_path / "data" / "admin-password").exists()
    good = subprocess.run(
        [sys.executable, "-m", "ocrhub.cli", "admin", "set-password", "--stdin"], input="a long and private passphrase\n",
        cwd=tmp_path, env={**{k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    stored = (tmp_path / "data" / "admin-password").read_text()
    assert stored.startswith("scrypt$") and "passphrase" not in stored
    assert (tmp_path / "data" / "admin-password").stat().st_mode & 0o077 == 0


def test_up_refuses_a_placeholder_admin_password_before_starting_anything(tmp_path):
    result = run_cli("up", cwd=tmp_path, env={"OCRHUB_DATA_DIR": str(tmp_path / "data"), "OCRHUB_ADMIN_PASSWORD": "changeme"}, timeout=60)
    assert result.returncode != 0 and "OCRHUB_ADMIN_PASSWORD is refused" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "data" / "hub.json").exists()
