"""The admin API on a real Redis: sign-in, sessions, CSRF, the sign-in limit, bots with write-only
secrets, the changes log, and a bot added here answering Feishu without a restart."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ocrhub.admin.passwords import AdminPasswordError, store_password
from ocrhub.admin.sessions import ATTEMPTS_PER_ADDRESS
from ocrhub.api import create_app
from tests.bots.feishu.fixtures import app, events, feishu, images_queued, serve  # noqa: F401 - fixtures

PASSWORD = "correct horse battery staple 42"
SECRETS = ("app-secret-ab12cd34ef", "encrypt-key-77aa55bb", "verify-token-1029384756")


def admin_operations() -> list[tuple[str, str]]:
    """Every admin API operation in the OpenAPI schema but sign-in, path parameters filled in: an
    operation added later is covered without touching this test."""
    from ocrhub.settings import Settings

    import tempfile

    with tempfile.TemporaryDirectory() as data_dir:  # the app makes its secret key there
        schema = create_app(Settings(admin_password=PASSWORD, redis_url="redis://127.0.0.1:9", data_dir=data_dir), _no_redis()).openapi()
    filled = {"{bot_id}": "sales", "{name}": "kb", "{job_id}": "job1", "{image_sha256}": "0" * 64}
    found = []
    for path, operations in schema["paths"].items():
        if not path.startswith("/admin/api/"):
            continue
        for method in operations:
            if (path, method) != ("/admin/api/session", "post"):
                for placeholder, value in filled.items():
                    path = path.replace(placeholder, value)
                found.append((method.upper(), path))
    return found


def _no_redis():  # noqa: ANN202 - building the app to read its schema talks to no Redis
    import redis

    return redis.Redis(host="127.0.0.1", port=9)


ADMIN_OPERATIONS = admin_operations()
# A body that passes validation where an operation takes one, so that a refusal is the gate's.
BODIES = {"/admin/api/feishu/bots/sales": {"app_id": "cli_x", "app_secret": "s" * 20}, "/admin/api/sinks/kb": {"url": "local://"},
          "/admin/api/routes": {"key": "*", "sinks": ["local"]}}


@pytest.fixture
def admin_settings(settings, set_env):
    return set_env(admin_password=PASSWORD, api_token="admin-test-api-token-99")


@pytest.fixture
def client(admin_settings, conn) -> Iterator[TestClient]:
    with TestClient(create_app(admin_settings, conn), base_url="http://hub.test") as test_client:
        yield test_client


def sign_in(client: TestClient, password: str = PASSWORD) -> str:
    response = client.post("/admin/api/session", json={"password": password})
    assert response.status_code == 200, response.text
    return response.json()["csrf"]


def bot_body(app_id: str = "cli_sales", **fields: object) -> dict:
    secret, key, token = SECRETS
    return {"app_id": app_id, "app_secret": secret, "encrypt_key": key, "verification_token": token, **fields}


def test_the_page_and_its_assets_are_served_without_data(client):
    page = client.get("/admin")
    assert page.status_code == 200 and "<form id=\"sign-in-form\">" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/admin/assets/admin.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/admin/assets/index.html").status_code == 404
    assert client.get("/admin/assets/..%2F__init__.py").status_code == 404


def test_sign_in_sets_a_strict_http_only_cookie(client):
    response = client.post("/admin/api/session", json={"password": PASSWORD})
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain http here; behind TLS it is set (next test)
    assert client.get("/admin/api/session").json()["csrf"] == response.json()["csrf"]


def test_the_cookie_is_secure_behind_tls(client):
    response = client.post("/admin/api/session", json={"password": PASSWORD}, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in response.headers["set-cookie"]


def test_a_wrong_password_is_refused_and_attempts_are_limited(client):
    for _ in range(ATTEMPTS_PER_ADDRESS):
        assert client.post("/admin/api/session", json={"password": "guess-guess-guess"}).status_code == 401
    limited = client.post("/admin/api/session", json={"password": PASSWORD})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


def test_the_schema_lists_every_admin_view():
    paths = {path for _method, path in ADMIN_OPERATIONS}
    assert {"/admin/api/feishu/bots", "/admin/api/routing", "/admin/api/operations", "/admin/api/search", "/admin/api/changes"} <= paths


@pytest.mark.parametrize(("method", "path"), ADMIN_OPERATIONS)
def test_every_admin_operation_refuses_without_a_session(client, method, path):
    response = client.request(method, path, json=BODIES.get(path), params={"q": "x", "key": "*"})
    assert response.status_code == 401, response.text


@pytest.mark.parametrize(("method", "path"), [op for op in ADMIN_OPERATIONS if op[0] != "GET"])
def test_every_change_refuses_without_the_csrf_token(client, method, path):
    csrf = sign_in(client)
    body, params = BODIES.get(path), {"key": "*"}
    assert client.request(method, path, json=body, params=params).status_code == 403
    assert client.request(method, path, json=body, params=params, headers={"X-CSRF-Token": csrf[:-1] + "x"}).status_code == 403


def test_the_api_token_does_not_open_the_admin_api(client):
    assert client.get("/admin/api/feishu/bots", headers={"Authorization": "Bearer admin-test-api-token-99"}).status_code == 401


def test_sign_out_ends_the_session(client):
    csrf = sign_in(client)
    assert client.delete("/admin/api/session", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert client.get("/admin/api/feishu/bots").status_code == 401


def test_a_bot_added_shows_its_webhook_url_and_never_its_secrets(client, caplog):
    caplog.set_level(logging.DEBUG)
    csrf = sign_in(client)
    saved = client.put("/admin/api/feishu/bots/sales", json=bot_body(), headers={"X-CSRF-Token": csrf})
    assert saved.status_code == 200, saved.text
    [bot] = client.get("/admin/api/feishu/bots").json()["bots"]
    assert bot["webhook_url"] == "http://hub.test/feishu/sales/events"
    assert bot["secrets"] == {"app_secret": True, "encrypt_key": True, "verification_token": True}
    assert "im:message.group_msg" in bot["scopes"] and bot["events"] == ["im.message.receive_v1"]
    changes = client.get("/admin/api/changes").json()["changes"]
    assert changes[0]["action"] == "add" and changes[0]["id"] == "sales" and "app_secret" in changes[0]["fields"]
    bodies = saved.text + client.get("/admin/api/feishu/bots").text + client.get("/admin/api/changes").text
    for secret in SECRETS:
        assert secret not in bodies and secret not in caplog.text


def test_secrets_are_sealed_in_redis(client, conn):
    csrf = sign_in(client)
    client.put("/admin/api/feishu/bots/sales", json=bot_body(), headers={"X-CSRF-Token": csrf})
    stored = b"".join(conn.hvals("ocrhub:config:feishu-bot"))
    assert b"cli_sales" in stored
    for secret in SECRETS:
        assert secret.encode() not in stored


def test_an_empty_secret_keeps_the_stored_one_and_clear_empties_it(client, admin_settings, conn):
    from bots.feishu.bots import registry

    csrf = sign_in(client)
    client.put("/admin/api/feishu/bots/sales", json=bot_body(), headers={"X-CSRF-Token": csrf})
    edit = {"app_id": "cli_sales", "group_policy": "all", "verification_token": "", "clear": ["encrypt_key"]}
    assert client.put("/admin/api/feishu/bots/sales", json=edit, headers={"X-CSRF-Token": csrf}).status_code == 200
    _, record = registry(admin_settings, conn).records()["sales"]
    assert (record["app_secret"], record["encrypt_key"], record["verification_token"]) == (SECRETS[0], "", SECRETS[2])


def test_a_bot_that_would_take_unverified_webhooks_is_refused_with_the_reason(client):
    csrf = sign_in(client)
    response = client.put("/admin/api/feishu/bots/open", json={"app_id": "cli_o", "app_secret": "s" * 20}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 422 and "Encrypt Key" in response.json()["detail"]
    assert client.put("/admin/api/feishu/bots/bad id", json=bot_body(), headers={"X-CSRF-Token": csrf}).status_code in (404, 422)


def test_a_settings_bot_is_listed_and_stays_removed(client, settings, set_env, conn):
    settings = set_env(admin_password=PASSWORD, feishu_app_id="cli_env", feishu_app_secret="env-secret-0000", feishu_encrypt_key="k" * 16)
    with TestClient(create_app(settings, conn)) as fresh:
        csrf = sign_in(fresh)
        [bot] = fresh.get("/admin/api/feishu/bots").json()["bots"]
        assert (bot["id"], bot["source"], bot["webhook_url"]) == ("default", "settings", "http://testserver/feishu/events")
        assert fresh.delete("/admin/api/feishu/bots/default", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert fresh.get("/admin/api/feishu/bots").json()["bots"] == []


def test_the_test_button_reports_feishus_answer(client, feishu, app):  # noqa: F811
    csrf = sign_in(client)
    good = bot_body(app.app_id, app_secret=app.app_secret, domain=feishu.origin)
    client.put("/admin/api/feishu/bots/good", json=good, headers={"X-CSRF-Token": csrf})
    client.put("/admin/api/feishu/bots/bad", json={**good, "app_secret": "not-the-secret-000"}, headers={"X-CSRF-Token": csrf})
    assert client.post("/admin/api/feishu/bots/good/test", headers={"X-CSRF-Token": csrf}).json()["ok"] is True
    bad = client.post("/admin/api/feishu/bots/bad/test", headers={"X-CSRF-Token": csrf}).json()
    assert bad["ok"] is False and bad["answer"]


def test_a_bot_added_here_takes_feishu_events_without_a_restart(admin_settings, conn, feishu, app, events):  # noqa: F811
    with serve(create_app(admin_settings, conn)) as served, TestClient(create_app(admin_settings, conn)) as page:
        url = f"{served.url}/feishu/sales/events"
        before = events.deliver(url, events.image("oc_chat1", b"png-bytes"))
        assert before.status_code == 404
        csrf = sign_in(page)
        body = {"app_id": app.app_id, "app_secret": app.app_secret, "encrypt_key": app.encrypt_key,
                "verification_token": app.verification_token, "domain": feishu.origin}
        assert page.put("/admin/api/feishu/bots/sales", json=body, headers={"X-CSRF-Token": csrf}).status_code == 200
        answer = _eventually(lambda: events.deliver(url, events.image("oc_chat1", b"png-bytes")))
        assert answer.json()["status"] == "queued"
        [job] = images_queued(conn, admin_settings)
        assert (job.bot_id, job.chat_id) == ("sales", "oc_chat1")
        page.put("/admin/api/feishu/bots/sales", json={**body, "enabled": False}, headers={"X-CSRF-Token": csrf})
        assert _eventually(lambda: events.deliver(url, events.image("oc_chat1", b"png")), status=404).status_code == 404


def _eventually(send, status: int = 200, seconds: float = 5.0):  # noqa: ANN001, ANN202
    import time

    deadline = time.monotonic() + seconds
    while True:
        response = send()
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


@pytest.mark.parametrize("weak", ["changeme", "password1234", "admin-admin-admin", "aaaaaaaaaaaaaaa", "short1!"])
def test_a_weak_admin_password_is_refused_at_start(settings, set_env, conn, weak):
    with pytest.raises(AdminPasswordError, match="OCRHUB_ADMIN_PASSWORD is refused"):
        create_app(set_env(admin_password=weak), conn)


def test_a_stored_hash_signs_in_and_the_file_is_private(settings, set_env, conn):
    settings = set_env()
    path = store_password(settings, PASSWORD)
    assert path.stat().st_mode & 0o077 == 0 and PASSWORD not in path.read_text()
    with TestClient(create_app(settings, conn)) as fresh:
        assert fresh.post("/admin/api/session", json={"password": PASSWORD + "x"}).status_code == 401
        sign_in(fresh)


def test_without_a_password_the_page_says_how_to_set_one(settings, set_env, conn):
    with TestClient(create_app(set_env(), conn)) as fresh:
        response = fresh.post("/admin/api/session", json={"password": PASSWORD})
        assert response.status_code == 403 and "ocrhub admin set-password" in response.json()["detail"]
