"""The HTTP API on a real Redis: who gets in, what an upload accepts and refuses, and odd input answered 4xx, never 500."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from ocr_core import store
from ocr_core.job import ImageJob, OcrResult
from ocr_core.queue import ocr_queue
from ocr_core.status import is_job_id
from ocrhub.api import create_app
from ocrhub.auth import token_file
from ocrhub.redis_server import EmbeddedRedis, free_port
from ocrhub.uploads import FORM_OVERHEAD
from sinks.local import LocalStore
from tests.api_server import asgi_request

TOKEN = "api-test-token-4f1c2b9e7d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROTECTED = [
    ("GET", "/api/queue"),
    ("GET", "/api/engine"),
    ("GET", "/api/failed"),
    ("GET", "/api/search?q=abc"),
    ("GET", "/api/jobs/" + "a" * 32),
    ("POST", "/api/images"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/openapi.json"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/no/such/route"),
]


@pytest.fixture
def api_settings(settings, set_env):
    return set_env(api_token=TOKEN, max_image_bytes=str(200_000))


@pytest.fixture
def client(api_settings, conn) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings, conn)) as test_client:
        yield test_client


def refused(response) -> bool:  # noqa: ANN001
    """The gate's answer: 401, a Bearer challenge, and nothing about why."""
    return response.status_code == 401 and response.headers["www-authenticate"] == "Bearer" and response.json() == {"detail": "unauthorized"}


# --- who gets in ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}"],
)
def test_every_api_route_and_the_docs_need_the_token(client, method, path, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    assert refused(client.request(method, path, headers=headers, content=b"image bytes"))


@pytest.mark.parametrize(("method", "path"), [p for p in PROTECTED if p[1] != "/no/such/route"])
@pytest.mark.parametrize("authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN} "])
def test_the_token_opens_them(client, method, path, authorization):
    response = client.request(method, path, headers={"Authorization": authorization}, content=b"image bytes")
    assert response.status_code in {200, 202, 404}, response.text
    assert "www-authenticate" not in response.headers


def test_probes_and_webhooks_are_open(client):
    assert client.get("/healthz").json()["ok"] is True
    assert client.get("/readyz").status_code in {200, 503}  # not ready without workers, but answered
    assert client.get("/metrics").status_code == 200
    # No Feishu bot is configured: the webhook itself answers, not the gate.
    webhook = client.post("/feishu/events", content=b"{}")
    assert webhook.status_code == 404 and "msg" in webhook.json()
    assert client.post("/feishu/sales/events", content=b"{}").status_code == 404


def test_metrics_close_when_not_public(settings, set_env, conn):
    with TestClient(create_app(set_env(api_token=TOKEN, metrics_public="false"), conn)) as client:
        assert refused(client.get("/metrics"))
        assert client.get("/metrics", headers=AUTH).status_code == 200
        assert client.get("/readyz").status_code in {200, 503}


def test_without_any_token_the_api_is_closed_and_the_log_says_how_to_set_one(settings, conn, caplog):
    assert not token_file(settings).exists() and not settings.api_token.get_secret_value()
    with caplog.at_level(logging.WARNING, logger="ocrhub.api"):
        app = create_app(settings, conn)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ocrhub.api"]
    assert len(warnings) == 1 and "OCRHUB_API_TOKEN" in warnings[0]
    with TestClient(app) as client:
        for authorization in ("", "Bearer", "Bearer ", "Bearer None"):
            assert refused(client.get("/api/queue", headers={"Authorization": authorization}))
        assert refused(client.get("/openapi.json"))
        assert client.get("/healthz").status_code == 200


def test_the_token_file_of_ocrhub_up_is_read_at_start(settings, conn):
    path = token_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("from-the-file\n")
    with TestClient(create_app(settings, conn)) as client:
        assert client.get("/api/queue", headers={"Authorization": "Bearer from-the-file"}).status_code == 200
        path.write_text("changed-later\n")  # read once, at start
        assert refused(client.get("/api/queue", headers={"Authorization": "Bearer changed-later"}))


def test_openapi_describes_the_bearer_scheme_on_every_protected_operation(client):
    schema = client.get("/openapi.json", headers=AUTH).json()
    scheme = schema["components"]["securitySchemes"]["apiToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/admin/api/"):  # the admin session instead (tests/admin)
                expected = [] if (path, method) == ("/admin/api/session", "post") else [{"adminSession": []}]
            else:
                expected = [] if path == "/healthz" else [{"apiToken": []}]
            assert operation["security"] == expected, path


# --- uploads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "application/octet-stream", "application/x-www-form-urlencoded", "image/png", "text/plain; charset=utf-8", "nonsense"],
)
def test_a_raw_body_is_the_image_whatever_its_content_type(client, conn, content_type):
    headers = AUTH if content_type is None else {**AUTH, "Content-Type": content_type}
    data = b"\x89PNG raw bytes \x00\xff" * 100
    response = client.post("/api/images", params={"name": "scan.png"}, content=data, headers=headers)
    assert response.status_code == 202, response.text
    body = response.json()
    assert store.load_image(conn, body["job_id"]) == data


@pytest.mark.parametrize("field", ["file", "image", "upload"])
def test_a_form_gives_its_first_file_whatever_the_field_is_called(client, conn, api_settings, field):
    data = b"GIF89a form bytes" * 50
    response = client.post("/api/images", files={field: ("photo.gif", data, "image/gif")}, data={"note": "hello"}, headers=AUTH)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert store.load_image(conn, job_id) == data
    assert ImageJob.from_dict(ocr_queue(conn, api_settings).get_jobs()[0].args[0]).image_key == "photo.gif"


def test_a_form_without_a_file_gets_a_hint(client):
    response = client.post("/api/images", data={"file": "not a file"}, files={"x": (None, "still not a file")}, headers=AUTH)
    assert response.status_code == 400
    assert "curl -F file=@photo.png" in response.json()["detail"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=x", b"--x\r\n"),
        ("multipart/form-data; boundary=x", b"garbage without any boundary"),
        ("multipart/form-data; boundary=x", b""),
        (None, b""),
    ],
)
def test_broken_or_empty_uploads_are_400(client, content_type, body):
    headers = AUTH if content_type is None else {**AUTH, "Content-Type": content_type}
    assert client.post("/api/images", content=body, headers=headers).status_code == 400


def test_the_upload_answer_has_an_absolute_status_url_and_its_sinks(client):
    answer = client.post("/api/images", content=b"bytes", headers=AUTH).json()
    assert answer["status_url"] == f"http://testserver/api/jobs/{answer['job_id']}"
    assert answer["sinks"] == ["local"] and "upload:*" in answer["sinks_from"]
    status = client.get(answer["status_url"], headers=AUTH).json()
    assert status["job_id"] == answer["job_id"] and status["status"] == "queued"


def test_the_upload_answer_follows_the_routes_setting(set_env, settings, conn):
    routed = set_env(api_token=TOKEN, routes=json.dumps({"upload:*": ["local", "kb"]}))
    with TestClient(create_app(routed, conn), base_url="https://ocr.example.test") as client:
        answer = client.post("/api/images", content=b"bytes", headers=AUTH).json()
    assert answer["sinks"] == ["local", "kb"] and answer["sinks_from"] == "OCRHUB_ROUTES['upload:*']"
    assert answer["status_url"].startswith("https://ocr.example.test/api/jobs/")


def test_an_oversized_upload_is_refused_from_its_content_length_before_reading(client, api_settings):
    limit = api_settings.max_image_bytes
    for content_type, allowed in (("application/octet-stream", limit), ("multipart/form-data; boundary=x", limit + FORM_OVERHEAD)):
        answer = asgi_request(
            client.app, "POST", "/api/images",
            headers=[*AUTH.items(), ("Content-Type", content_type), ("Content-Length", str(allowed + 1))],
            chunks=iter(lambda: b"x" * 65536, None),
        )
        assert answer.status == 413 and answer.receive_calls == 0
        assert answer.headers["connection"] == "close"


@pytest.mark.parametrize("content_type", ["application/octet-stream", "multipart/form-data; boundary=x"])
def test_an_endless_body_is_read_only_up_to_the_limit(client, api_settings, content_type):
    chunk = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n" + b"x" * 65000
    answer = asgi_request(
        client.app, "POST", "/api/images", headers=[*AUTH.items(), ("Content-Type", content_type)], chunks=iter(lambda: chunk, None)
    )
    assert answer.status == 413 and answer.headers["connection"] == "close"
    assert answer.body_bytes_pulled <= api_settings.max_image_bytes + FORM_OVERHEAD + len(chunk)


def test_a_form_file_just_over_the_limit_is_refused(client, api_settings):
    data = b"y" * (api_settings.max_image_bytes + 1)
    response = client.post("/api/images", files={"file": ("big.png", data)}, headers=AUTH)
    assert response.status_code == 413


def test_an_upload_at_the_limit_is_taken(client, api_settings, conn):
    data = b"z" * api_settings.max_image_bytes
    assert client.post("/api/images", content=data, headers=AUTH).status_code == 202
    assert client.post("/api/images", files={"file": ("big.png", data)}, headers=AUTH).status_code == 202


def test_uploads_answer_503_with_retry_after_while_redis_is_nearly_full(tmp_path, set_env, settings):
    with EmbeddedRedis(tmp_path / "full-redis", persist=False, maxmemory=4 * 1024 * 1024) as small:
        nearly_full = set_env(api_token=TOKEN, redis_url=small.url, intake_memory_fraction="0.05")
        client_conn = redis.Redis.from_url(small.url)
        with TestClient(create_app(nearly_full, client_conn)) as client:
            response = client.post("/api/images", content=b"bytes", headers=AUTH)
        assert response.status_code == 503 and int(response.headers["retry-after"]) > 0
        assert "try again later" in response.json()["detail"]
        assert client_conn.dbsize() == 0


def test_api_answers_503_with_retry_after_while_redis_is_away(api_settings):
    gone = redis.Redis(port=free_port(), socket_connect_timeout=1)
    with TestClient(create_app(api_settings, gone)) as client:
        for method, path in (("POST", "/api/images"), ("GET", "/api/queue"), ("GET", "/api/failed"), ("GET", "/api/jobs/" + "a" * 32)):
            response = client.request(method, path, content=b"bytes", headers=AUTH)
            assert response.status_code == 503 and response.headers["retry-after"] == "5", (path, response.text)
            assert str(gone.connection_pool.connection_kwargs["port"]) not in response.text


# --- job status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    [".", "..", "*", " ", "a b", "%20", "é", "日本", "\x00", "a" * 31, "A" * 32, "a" * 33, "x" * 100_000, "ocr-" + "a" * 32, "a" * 32 + "\n"],
)
def test_odd_job_ids_are_404(client, job_id):
    answer = asgi_request(client.app, "GET", f"/api/jobs/{job_id}", headers=AUTH.items())
    assert answer.status == 404, answer.body
    assert len(answer.body) < 200  # the id is not echoed back


def test_job_ids_have_the_shape_image_jobs_give_them():
    job = ImageJob(platform="upload", bot_id="api", chat_id="api", message_id="m", image_key="k")
    assert is_job_id(job.job_id) and not is_job_id(job.job_id.upper()) and not is_job_id("..")


# --- search --------------------------------------------------------------------------------------


@pytest.fixture
def kb(api_settings) -> LocalStore:
    local = LocalStore(api_settings.data_dir / "results.sqlite3")
    job = ImageJob(platform="feishu", bot_id="default", chat_id="oc_1", message_id="m1", image_key="i1", sender="ou_1")
    local.save(OcrResult(job=job, text='Invoice (total) "980.00" due *now* AND later', lines=(), engine="rapidocr", image_sha256="s" * 64))
    return local


@pytest.mark.parametrize(
    "raw_query",
    [
        b"q=%00abc", b"q=abc%00", b"q=%00", b"q=%22", b"q=%22%22%22", b"q=a%20OR%20b", b"q=NEAR(a%20b)", b"q=*", b"q=abc*",
        b"q=%5Eabc", b"q=text:abc", b"q=(((", b"q=%27", b"q=%25", b"q=_", b"q=%5C", b"q=-abc", b"q=%ED%A0%80abc",
        b"q=%FF%FEabc", b"q=%F0%9F%98%80", b"q=" + b"x" * 500, b"q=" + b"ab%20" * 120, b"q=%0A%0D%09", b"q=", b"q=abc&q=def",
    ],
)
def test_any_search_string_is_safe(client, kb, raw_query):
    answer = asgi_request(client.app, "GET", "/api/search", query=raw_query, headers=AUTH.items())
    assert answer.status == 200, answer.body
    assert isinstance(json.loads(answer.body)["results"], list)


@pytest.mark.parametrize("query", ['(total)', '"980.00"', "*now*", "AND", "invoice later", "980.00 due"])
def test_search_syntax_is_only_text(client, kb, query):
    results = client.get("/api/search", params={"q": query}, headers=AUTH).json()["results"]
    assert [r["chat_id"] for r in results] == ["oc_1"]


@pytest.mark.parametrize("query", [b"", b"q=" + b"x" * 501, b"q=a&limit=0", b"q=a&limit=201", b"q=a&limit=-1", b"q=a&limit=99999999999999999999999", b"q=a&limit=x"])
def test_search_bounds_are_422(client, query):
    assert asgi_request(client.app, "GET", "/api/search", query=query, headers=AUTH.items()).status == 422


# --- failed jobs ---------------------------------------------------------------------------------


def test_failed_lists_odd_jobs_instead_of_crashing(client, conn, api_settings):
    queue = ocr_queue(conn, api_settings)
    registry = FailedJobRegistry(queue=queue)
    good = Job.create("ocr_core.pipeline.process", args=({"platform": "upload"},), connection=conn, serializer=JSONSerializer, id="ocr-good", description="ocr upload")
    good.save()
    # As a worker records a failure: a result in the job's stream, the id in the registry.
    Result.create_failure(good, ttl=600, exc_string="Traceback (most recent call last):\nocr_core.errors.ImageError: not an image\n")
    registry.add(good)
    for odd_id, record in {"ocr-bad-date": {"created_at": "yesterday"}, "ocr-no-data": {"status": "failed"}}.items():
        odd = Job.create("ocr_core.pipeline.process", connection=conn, serializer=JSONSerializer, id=odd_id)
        registry.add(odd)
        if "data" not in record:
            conn.hdel(odd.key, "data")
        conn.hset(odd.key, mapping=record)
    conn.zadd(registry.key, {"ocr-expired": "+inf", "bad id with spaces": "+inf"})

    listed = client.get("/api/failed", headers=AUTH)
    assert listed.status_code == 200, listed.text
    by_id = {entry["id"]: entry for entry in listed.json()["failed"]}
    assert by_id["ocr-good"]["reason"] == "ocr_core.errors.ImageError: not an image"
    assert by_id["ocr-good"]["description"] == "ocr upload"
    for odd_id in ("ocr-bad-date", "ocr-no-data", "bad id with spaces"):
        assert by_id[odd_id]["reason"].startswith("unreadable job record"), by_id
    assert "ocr-expired" not in by_id
    assert client.get("/api/failed", params={"limit": 0}, headers=AUTH).status_code == 422


def test_engine_urls_are_shown_without_their_credentials(set_env, settings, conn):
    with_vllm = set_env(api_token=TOKEN, vllm_urls="http://admin:s3cret-pass@127.0.0.1:9")
    with TestClient(create_app(with_vllm, conn)) as client:
        body = client.get("/api/engine", headers=AUTH)
    assert body.status_code == 200 and "s3cret-pass" not in body.text and "127.0.0.1:9" in body.text
