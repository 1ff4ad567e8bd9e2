"""Logging: plain or JSON lines, the job id on every line logged inside a job, never a secret."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from ocrhub.logs import NOISY_LOGGERS, OcrhubHandler, add_secret, current_job_id, job_context, setup_logging

log = logging.getLogger("ocrhub.test")


@pytest.fixture
def logged(settings, set_env, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., Callable[[], list[str]]]]:
    """Set up logging as a command does, with these OCRHUB_ settings; the returned reader gives the stderr lines so far."""
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *NOISY_LOGGERS)}

    def configure(**values: str) -> Callable[[], list[str]]:
        setup_logging(set_env(**values))
        capsys.readouterr()
        return lambda: capsys.readouterr().err.splitlines()

    yield configure
    for handler in [h for h in root.handlers if isinstance(h, OcrhubHandler)]:
        root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_json_lines_carry_the_job_id_inside_a_job_context(logged) -> None:
    read = logged(log_json="true")
    log.info("before %s", "any job")
    with job_context("job-1"):
        log.warning("reading %d lines", 3)
        with job_context("job-2"):
            log.info("nested")
        log.info("back")
    log.info("after")

    entries = [json.loads(line) for line in read()]
    assert [(e["message"], e.get("job_id")) for e in entries] == [
        ("before any job", None), ("reading 3 lines", "job-1"), ("nested", "job-2"), ("back", "job-1"), ("after", None),
    ]
    assert entries[1]["level"] == "WARNING" and entries[1]["logger"] == "ocrhub.test"
    assert entries[0]["time"].endswith("+00:00") and "T" in entries[0]["time"]
    assert current_job_id() is None


def test_job_context_as_a_decorator_and_per_thread(logged) -> None:
    read = logged(log_json="true")

    @job_context("job-d")
    def deliver() -> None:
        log.info("delivering")

    deliver()
    with job_context("job-t"):
        # A thread started inside keeps no job: each worker thread sets its own.
        thread = threading.Thread(target=lambda: log.info("other thread"))
        thread.start()
        thread.join()
    entries = [json.loads(line) for line in read()]
    assert [(e["message"], e.get("job_id")) for e in entries] == [("delivering", "job-d"), ("other thread", None)]


def test_an_exception_stays_one_json_line(logged) -> None:
    read = logged(log_json="true")
    try:
        raise ValueError("bad image")
    except ValueError:
        with job_context("job-x"):
            log.exception("could not read")
    [line] = read()
    entry = json.loads(line)
    assert entry["message"] == "could not read" and entry["job_id"] == "job-x"
    assert "Traceback" in entry["exception"] and "ValueError: bad image" in entry["exception"]


def test_plain_lines_name_the_job(logged) -> None:
    read = logged()
    log.info("outside")
    with job_context("job-p"):
        log.info("inside")
    outside, inside = read()
    assert outside.endswith(" INFO ocrhub.test: outside")
    assert inside.endswith(" INFO ocrhub.test [job-p]: inside")


def test_no_secret_reaches_the_log(logged, tmp_path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "api-token").write_text("generated-api-token-value\n")
    read = logged(
        log_json="true",
        feishu_app_secret="feishu-app-secret",
        redis_url="redis://:redis-pass%40word@127.0.0.1:6379/0",
        sinks=json.dumps({"kb": "notion://ntn_notion_token@0123456789abcdef0123456789abcdef?rate=2"}),
        feishu_bots=json.dumps({"sales": {"app_id": "cli_x", "app_secret": "sales-bot-secret", "encrypt_key": "sales-encrypt-key"}}),
        vllm_api_key="vllm-key-value",
    )
    secrets = ["feishu-app-secret", "redis-pass@word", "redis-pass%40word", "ntn_notion_token", "sales-bot-secret",
               "sales-encrypt-key", "vllm-key-value", "generated-api-token-value"]
    log.info("connecting with %s and %s", "feishu-app-secret", "redis://:redis-pass%40word@127.0.0.1:6379/0")
    log.warning("sales bot: " + "sales-bot-secret / sales-encrypt-key")  # noqa: G003 - a careless message, on purpose
    log.info("token %r", {"auth": "ntn_notion_token", "vllm": "vllm-key-value", "api": "generated-api-token-value"})
    try:
        raise RuntimeError("refused redis-pass@word")
    except RuntimeError:
        log.exception("failed")
    add_secret("tenant-token-at-run-time")
    log.info("tenant token tenant-token-at-run-time")
    output = "\n".join(read())
    for secret in [*secrets, "tenant-token-at-run-time"]:
        assert secret not in output
    entries = [json.loads(line) for line in output.splitlines()]
    assert entries[0]["message"] == "connecting with **** and redis://:****@127.0.0.1:6379/0"
    assert "RuntimeError: refused ****" in entries[3]["exception"]
    assert entries[4]["message"] == "tenant token ****"


def test_httpx_request_lines_only_at_debug(logged) -> None:
    def fetch() -> None:
        with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200))) as client:
            client.get("http://notion.test/v1/pages/0123")

    read = logged(log_level="INFO")
    fetch()
    assert read() == []
    read = logged(log_level="DEBUG")
    fetch()
    assert any("HTTP Request: GET http://notion.test/v1/pages/0123" in line for line in read())


def test_setting_up_again_replaces_the_handler(logged) -> None:
    logged()
    read = logged(log_json="true")
    log.info("once")
    assert [json.loads(line)["message"] for line in read()] == ["once"]
    assert len([h for h in logging.getLogger().handlers if isinstance(h, OcrhubHandler)]) == 1
