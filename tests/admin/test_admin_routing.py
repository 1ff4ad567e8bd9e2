"""Routes and sinks on the admin page: checked when saved (the Notion emulator's missing column is
named), masked when shown, and followed by the running hub without a restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ocrhub.api import create_app
from tests.admin.conftest import signed_in
from ocrhub.worker import build_worker
from sinks.local import LocalStore
from tests.emulators.notion import NotionEmulator
from tests.imagegen import encode, text_image

PASSWORD = "routing-test-password-31"
TOKEN = "routing-api-token-5e1"


@pytest.fixture
def admin_settings(settings, set_env):
    return set_env(admin_password=PASSWORD, api_token=TOKEN)


@pytest.fixture
def client(admin_settings, conn) -> Iterator[TestClient]:
    with signed_in(admin_settings, conn, PASSWORD) as test_client:
        yield test_client


@pytest.fixture
def notion() -> Iterator[NotionEmulator]:
    with NotionEmulator() as emulator:
        yield emulator


def test_a_notion_sink_missing_a_column_is_refused_naming_it(client, notion):
    database_id, _ = notion.workspace.add_database(properties={"Name": "title", "Text": "rich_text"})
    answer = client.put("/admin/api/sinks/kb", json={"url": notion.sink_url(database_id)})
    assert answer.status_code == 422 and "property 'Message ID' (Text, column message_id) is missing" in answer.json()["detail"]
    assert notion.token not in answer.text
    assert [s["name"] for s in client.get("/admin/api/routing").json()["sinks"]] == []


def test_a_working_notion_sink_is_saved_and_shown_masked(client, notion, conn):
    database_id, _ = notion.workspace.add_database()
    saved = client.put("/admin/api/sinks/kb", json={"url": notion.sink_url(database_id)})
    assert saved.status_code == 200, saved.text
    [sink] = client.get("/admin/api/routing").json()["sinks"]
    assert sink["name"] == "kb" and notion.token not in sink["url"] and "****" in sink["url"]
    assert notion.token.encode() not in b"".join(conn.hvals("ocrhub:config:sink"))


def test_an_unknown_scheme_and_a_builtin_name_are_refused(client):
    assert "unknown sink scheme" in client.put("/admin/api/sinks/x", json={"url": "ftp://somewhere"}).json()["detail"]
    assert client.put("/admin/api/sinks/local", json={"url": "local:///tmp/x.sqlite3"}).status_code == 422


def test_a_route_may_name_only_sinks_that_exist(client):
    answer = client.put("/admin/api/routes", json={"key": "feishu:*", "sinks": ["local", "nowhere"]})
    assert answer.status_code == 422 and "'nowhere'" in answer.json()["detail"]


def test_a_route_saved_on_the_page_steers_the_next_upload_without_a_restart(client, admin_settings, conn, tmp_path):
    archive = tmp_path / "archive.sqlite3"
    assert client.put("/admin/api/sinks/archive", json={"url": f"local://{archive}"}).status_code == 200
    assert client.get("/admin/api/routing").json()["uploads_go_to"] == ["local"]
    assert client.put("/admin/api/routes", json={"key": "upload:*", "sinks": ["archive"]}).status_code == 200
    assert client.get("/admin/api/routing").json()["uploads_go_to"] == ["archive"]
    image = encode(text_image(["routed by the admin page"], size=40), "PNG")
    upload = client.post("/api/images", content=image, headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert upload["sinks"] == ["archive"] and upload["sinks_from"] == "the admin page's route 'upload:*'"
    build_worker(conn, admin_settings).work(burst=True)
    assert [row.text for row in LocalStore(archive).search("routed")] == ["routed by the admin page"]
    assert LocalStore(admin_settings.data_dir / "results.sqlite3").count() == 0
    # A sink a route still uses is not removed; once the route goes, it may be.
    assert client.delete("/admin/api/sinks/archive").status_code == 409
    assert client.delete("/admin/api/routes", params={"key": "upload:*"}).status_code == 200
    assert client.delete("/admin/api/sinks/archive").status_code == 200


def test_a_route_carries_its_ocr_task_and_an_unknown_task_is_refused(client, admin_settings, conn):
    from ocrhub.live_config import live_settings

    refused = client.put("/admin/api/routes", json={"key": "feishu:default:oc_fin", "sinks": ["local"], "task": "poem"})
    assert refused.status_code == 422 and "unknown OCR task 'poem'" in refused.json()["detail"]
    saved = client.put("/admin/api/routes", json={"key": "feishu:default:oc_fin", "sinks": ["local"], "task": "fields:Amount,Date"})
    assert saved.status_code == 200
    [route] = client.get("/admin/api/routing").json()["routes"]
    assert route["task"] == "fields:Amount,Date"
    assert live_settings(admin_settings, conn).tasks["feishu:default:oc_fin"] == "fields:Amount,Date"


def test_a_search_hit_links_the_notion_row_its_text_went_to(client, admin_settings, conn, notion):
    database_id, _ = notion.workspace.add_database()
    assert client.put("/admin/api/sinks/kb", json={"url": notion.sink_url(database_id)}).status_code == 200
    assert client.put("/admin/api/routes", json={"key": "upload:*", "sinks": ["local", "kb"]}).status_code == 200
    image = encode(text_image(["expense claim 5521"], size=40), "PNG")
    client.post("/api/images", content=image, headers={"Authorization": f"Bearer {TOKEN}"})
    build_worker(conn, admin_settings).work(burst=True)
    [hit] = client.get("/admin/api/search", params={"q": "expense 5521"}).json()["results"]
    [link] = hit["links"]
    assert link["sink"] == "kb" and link["url"].startswith("https://") and notion.token not in link["url"]


def test_routing_refuses_without_a_session(admin_settings, conn):
    with TestClient(create_app(admin_settings, conn)) as anonymous:
        assert anonymous.get("/admin/api/routing").status_code == 401
        assert anonymous.put("/admin/api/routes", json={"key": "*", "sinks": ["local"]}).status_code == 401


def test_no_secret_appears_in_any_admin_answer_or_log_line(client, notion, caplog):
    import logging

    from tests.admin.test_admin_api import ADMIN_OPERATIONS, SECRETS, bot_body

    caplog.set_level(logging.DEBUG)
    database_id, _ = notion.workspace.add_database()
    bodies = [
        client.put("/admin/api/feishu/bots/sales", json=bot_body()).text,
        client.put("/admin/api/sinks/kb", json={"url": notion.sink_url(database_id)}).text,
        client.put("/admin/api/routes", json={"key": "feishu:*", "sinks": ["feishu-reply", "kb"]}).text,
    ]
    bodies += [client.get(path, params={"q": "x"}).text for method, path in ADMIN_OPERATIONS if method == "GET"]
    everything = "\n".join(bodies) + caplog.text
    for secret in (*SECRETS, notion.token):
        assert secret not in everything
