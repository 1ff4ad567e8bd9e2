"""The Feishu emulator, an app on it configured as the default bot, and a way to serve an app: for bot and sink tests alike."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis
import uvicorn
from fastapi import FastAPI

from bots.feishu.intake import EXPAND, batch_images
from ocr_core.job import ImageJob
from ocr_core.queue import intake_queue, ocr_queue
from ocrhub.settings import Settings
from tests.emulators.feishu import App, Events, FeishuEmulator

ENCRYPT_KEY = "emulated-encrypt-key-0123456789"
VERIFICATION_TOKEN = "emulated-verification-token"


@pytest.fixture
def feishu() -> Iterator[FeishuEmulator]:
    with FeishuEmulator() as emulator:
        yield emulator


@pytest.fixture
def app(feishu: FeishuEmulator) -> App:
    return feishu.add_app(encrypt_key=ENCRYPT_KEY, verification_token=VERIFICATION_TOKEN)


@pytest.fixture
def events(feishu: FeishuEmulator, app: App) -> Events:
    return feishu.events(app)


@pytest.fixture
def feishu_settings(settings: Settings, set_env, feishu: FeishuEmulator, app: App) -> Settings:
    """The app as the default bot, talking to the emulator."""
    return set_env(
        feishu_app_id=app.app_id,
        feishu_app_secret=app.app_secret,
        feishu_encrypt_key=app.encrypt_key,
        feishu_verification_token=app.verification_token,
        feishu_domain=feishu.origin,
    )


@dataclass
class Served:
    url: str
    server: uvicorn.Server


@contextmanager
def serve(api: FastAPI) -> Iterator[Served]:
    """`api` under a real uvicorn on a free loopback port, in a thread."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", server)
    finally:
        server.should_exit = True
        thread.join(10)


def images_queued(conn: redis.Redis, settings: Settings) -> list[ImageJob]:
    """Every image waiting to be read, in queue order, whether queued alone or in a batch not yet expanded."""
    images: list[ImageJob] = []
    for rq_job in intake_queue(conn, settings).get_jobs() + ocr_queue(conn, settings).get_jobs():
        if rq_job.func_name == EXPAND:
            images.extend(batch_images(conn, *rq_job.args))
        else:
            images.append(ImageJob.from_dict(rq_job.args[0]))
    return images
