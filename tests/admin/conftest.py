"""What the admin tests share: an API client already signed in, sending its CSRF token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from fastapi.testclient import TestClient

from ocrhub.api import create_app
from ocrhub.settings import Settings


@contextmanager
def signed_in(settings: Settings, conn: redis.Redis, password: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings, conn)) as client:
        answer = client.post("/admin/api/session", json={"password": password})
        assert answer.status_code == 200, answer.text
        client.headers["X-CSRF-Token"] = answer.json()["csrf"]
        yield client
