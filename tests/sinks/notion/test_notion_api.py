"""NotionApi turns the shared budget's refusal into a SinkError the delivery retries later."""

from __future__ import annotations

import pytest
import redis

from sinks.base import SinkError
from sinks.notion.api import NotionApi, make_client, shared_budget

TOKEN = "ntn_budget_secret"


def test_a_budget_booked_beyond_the_wait_is_a_retry_later(conn: redis.Redis) -> None:
    budget = shared_budget(conn, TOKEN, 50)
    budget.pause(200)
    api = NotionApi(make_client(TOKEN, "http://127.0.0.1:9", 1.0), budget)
    with pytest.raises(SinkError, match="the Notion request budget for this integration is booked 200 s ahead"):
        api.read("users.me", lambda: pytest.fail("no request may be sent"))
    assert [key.decode().rsplit(":", 1)[0] for key in conn.keys("*")] == ["ocrhub:notion:budget"]
