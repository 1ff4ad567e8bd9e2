"""Shared fixtures: a real redis-server for the session, fresh settings per test, no network beyond loopback."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ocrhub.redis_server import EmbeddedRedis
from ocrhub.settings import Settings, get_settings

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = address[0]
        try:
            allowed = ipaddress.ip_address(host).is_loopback
        except ValueError:
            allowed = host == "localhost"
        if not allowed:
            raise ConnectionRefusedError(f"tests may not reach {host}: only loopback is allowed")
    return _real_connect(self, address)


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _loopback_only  # type: ignore[method-assign]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("OCRHUB_TEST_VLLM_REAL") == "1":
        return
    skip = pytest.mark.skip(reason="needs a real vLLM: bash tests/vllm_real/install.sh, then OCRHUB_TEST_VLLM_REAL=1 pytest -m vllm_real")
    for item in items:
        if "vllm_real" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False) as server:
        yield server


@pytest.fixture
def conn(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_server: EmbeddedRedis) -> Iterator[Settings]:
    """Settings as the worker code reads them (environment), with retries immediate for speed."""
    monkeypatch.chdir(tmp_path)
    for key, value in {
        "OCRHUB_DATA_DIR": str(tmp_path / "data"),
        "OCRHUB_REDIS_URL": redis_server.url,
        "OCRHUB_RETRY_INTERVALS": "0,0",
        "OCRHUB_WORKERS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def set_env(monkeypatch: pytest.MonkeyPatch):
    """Change OCRHUB_ settings inside a test and get the fresh settings object back."""

    def apply(**values: str) -> Settings:
        for key, value in values.items():
            monkeypatch.setenv(f"OCRHUB_{key.upper()}", value)
        get_settings.cache_clear()
        return get_settings()

    return apply
