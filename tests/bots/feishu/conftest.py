"""Fixtures for the Feishu bot: those of fixtures.py, and the webhook served by a real uvicorn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from ocrhub.settings import Settings
from tests.bots.feishu.fixtures import app, events, feishu, feishu_settings, serve  # noqa: F401 - fixtures


@pytest.fixture
def webhook(feishu_settings: Settings, conn) -> Iterator[str]:
    """Base URL of a served app with the Feishu router, for the default bot."""
    from bots.feishu.webhook import build_router

    api = FastAPI()
    api.include_router(build_router(feishu_settings, conn))
    with serve(api) as served:
        yield served.url
