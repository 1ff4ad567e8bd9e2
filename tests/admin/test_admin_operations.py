"""The admin page's operations and knowledge-base API on a real Redis, with a real worker and the
local store: failed jobs with their reason and a requeue, recent results, search with thumbnails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from rq.registry import FailedJobRegistry

from ocr_core import store
from ocr_core.job import ImageJob, OcrResult
from ocr_core.queue import delivery_queue, enqueue_delivery
from ocrhub.api import create_app
from tests.admin.conftest import signed_in
from ocrhub.worker import build_worker
from sinks.local import LocalSink, LocalStore
from tests.imagegen import encode, text_image

PASSWORD = "operations-test-password-77"


@pytest.fixture
def admin_settings(settings, set_env):
    return set_env(admin_password=PASSWORD)


@pytest.fixture
def client(admin_settings, conn) -> Iterator[TestClient]:
    with signed_in(admin_settings, conn, PASSWORD) as test_client:
        yield test_client


def failed_delivery(conn, settings) -> str:  # noqa: ANN001
    """A delivery to a sink nobody configured: it fails for good, as an admin would find it."""
    job = ImageJob(platform="upload", bot_id="api", chat_id="api", message_id="m1", image_key="scan.png")
    store.save_result(conn, OcrResult(job=job, text="quarterly numbers", lines=(), engine="rapidocr", image_sha256="1" * 64), settings.blob_ttl)
    enqueue_delivery(conn, job.job_id, "kb", settings)
    build_worker(conn, settings).work(burst=True)
    [failed_id] = FailedJobRegistry(queue=delivery_queue(conn, settings)).get_job_ids()
    return failed_id


def delivered_locally(conn, settings, text: str, picture: bytes, chat: str = "oc_team") -> OcrResult:  # noqa: ANN001
    job = ImageJob(platform="feishu", bot_id="default", chat_id=chat, message_id=f"om_{abs(hash(text))}", image_key="img_1",
                   sender="ou_alice", sent_at="2026-11-30T10:00:00+00:00")
    result = OcrResult(job=job, text=text, lines=(), engine="rapidocr", image_sha256=f"{abs(hash(text)):064d}"[-64:],
                       created_at="2026-11-30T10:00:04+00:00")
    LocalSink(LocalStore(settings.data_dir / "results.sqlite3"), settings).deliver(result, picture)
    return result


def test_operations_show_queues_workers_engine_and_failed_jobs_with_their_reason(client, conn, admin_settings):
    failed_id = failed_delivery(conn, admin_settings)
    ops = client.get("/admin/api/operations").json()
    assert ops["queues"][f"{admin_settings.queue_name}-deliver"]["failed"] == 1
    assert ops["engine"]["engine"] == "rapidocr" and set(ops["workers"]) == {"alive", "busy", "registered"}
    [failed] = ops["failed"]
    assert failed["id"] == failed_id and "no sink named 'kb'" in failed["reason"]


def test_a_failed_job_is_requeued_once(client, conn, admin_settings):
    failed_id = failed_delivery(conn, admin_settings)
    assert client.post(f"/admin/api/failed/{failed_id}/requeue").json()["requeued"] == failed_id
    assert FailedJobRegistry(queue=delivery_queue(conn, admin_settings)).get_job_ids() == []
    assert client.post(f"/admin/api/failed/{failed_id}/requeue").status_code == 404
    assert client.post(f"/admin/api/failed/{failed_id}/requeue", headers={"X-CSRF-Token": ""}).status_code == 403


def test_search_finds_the_text_with_its_thumbnail_and_recent_shows_the_wait(client, conn, admin_settings):
    picture = encode(text_image(["invoice 2024-0815"], size=40), "PNG")
    result = delivered_locally(conn, admin_settings, "invoice 2024-0815 total 1280.00", picture)
    [hit] = client.get("/admin/api/search", params={"q": "invoice 1280"}).json()["results"]
    assert (hit["sender"], hit["chat_id"]) == ("ou_alice", "oc_team")
    thumb = client.get(hit["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    [recent] = client.get("/admin/api/operations").json()["recent"]
    assert recent["job_id"] == result.job.job_id and recent["seconds"] == 4.0
    assert client.get("/admin/api/thumbnails/" + "0" * 64).status_code == 404
    assert client.get("/admin/api/thumbnails/..%2F..%2Fresults").status_code in (404, 422)


def test_the_views_refuse_without_a_session(admin_settings, conn):
    with TestClient(create_app(admin_settings, conn)) as anonymous:
        for path in ("/admin/api/operations", "/admin/api/search?q=x", "/admin/api/thumbnails/" + "0" * 64):
            assert anonymous.get(path).status_code == 401
        assert anonymous.post("/admin/api/failed/x/requeue").status_code == 401


def test_a_picture_that_cannot_be_decoded_still_delivers_its_text(conn, admin_settings):
    result = delivered_locally(conn, admin_settings, "text without a picture", b"not an image")
    local = LocalStore(admin_settings.data_dir / "results.sqlite3")
    assert local.get(result.job.job_id).text == "text without a picture"
    assert local.thumbnail(result.image_sha256) is None


def test_an_upload_read_by_a_worker_is_found_with_its_thumbnail(client, conn, admin_settings):
    from ocr_core.queue import submit_bytes

    job = submit_bytes(conn, encode(text_image(["parcel 7781 delivered"], size=40), "PNG"), admin_settings, source="api", name="parcel.png")
    build_worker(conn, admin_settings).work(burst=True)
    [hit] = client.get("/admin/api/search", params={"q": "parcel 7781"}).json()["results"]
    assert hit["job_id"] == job.job_id
    assert client.get(hit["thumbnail"]).headers["content-type"] == "image/jpeg"
