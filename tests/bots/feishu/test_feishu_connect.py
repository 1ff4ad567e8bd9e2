"""`ocrhub feishu-connect` as a real process: lark-oapi's ws.Client against the emulated long connection."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.bots.feishu.fixtures import images_queued
from tests.emulators.feishu import chat_id


@pytest.fixture
def connected(feishu, app, feishu_settings, redis_server) -> Iterator[subprocess.Popen]:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
    env.update(
        OCRHUB_REDIS_URL=redis_server.url,
        OCRHUB_FEISHU_APP_ID=app.app_id,
        OCRHUB_FEISHU_APP_SECRET=app.app_secret,
        OCRHUB_FEISHU_DOMAIN=feishu.origin,
        OCRHUB_DATA_DIR=str(feishu_settings.data_dir),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "ocrhub.cli", "feishu-connect"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield process
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode(errors="replace")
        # The SDK logs its WebSocket URL; the ticket in it must not reach the log.
        assert "ticket=" not in output, output


def test_events_over_the_long_connection_are_queued_once(connected, feishu, app, events, conn, feishu_settings):
    image = events.image(chat_id(), b"png")
    post = events.post(chat_id(), ["caption", b"one", b"two"])
    assert feishu.push(app.app_id, image, timeout=60) == 200
    assert feishu.push(app.app_id, image) == 200
    assert feishu.push(app.app_id, post) == 200
    assert feishu.push(app.app_id, events.other("im.chat.member.bot.added_v1")) == 200
    assert feishu.push(app.app_id, events.text(chat_id(), "hi")) == 200
    jobs = images_queued(conn, feishu_settings)
    assert [(j.message_id, j.index) for j in jobs] == [
        (image["event"]["message"]["message_id"], 0),
        (post["event"]["message"]["message_id"], 0),
        (post["event"]["message"]["message_id"], 1),
    ]
    assert jobs[1].context == "caption"


def test_unknown_bot_is_a_clear_error(feishu_settings, redis_server):
    env = {**os.environ, "OCRHUB_REDIS_URL": redis_server.url}
    done = subprocess.run(
        [sys.executable, "-m", "ocrhub.cli", "feishu-connect", "--bot", "nobody"], env=env, capture_output=True, timeout=120
    )
    assert done.returncode != 0
    assert b"no Feishu bot 'nobody'" in done.stderr
