"""Group chat to reply, in one process: webhook (uvicorn) → Redis → burst worker with real OCR → emulated Feishu."""

from __future__ import annotations

import json

import pytest

from bots.feishu.bots import get_bot
from bots.feishu.events import parse_event
from bots.feishu.intake import jobs_for
from ocr_core.status import job_state
from ocrhub.worker import build_worker
from sinks.local import LocalStore
from tests.emulators.feishu import chat_id
from tests.imagegen import encode, text_image


def picture(*lines: str) -> bytes:
    return encode(text_image(list(lines), size=48), "PNG")


def work(conn, settings) -> None:  # noqa: ANN001
    build_worker(conn, settings).work(burst=True, with_scheduler=True)


def words(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture
def group() -> str:
    return chat_id()


def test_image_and_post_each_get_exactly_one_reply(webhook, events, feishu, conn, feishu_settings, group):
    url = f"{webhook}/feishu/events"
    image = events.image(group, picture("harbor window 42"))
    post = events.post(group, ["two scans", picture("copper lantern"), picture("velvet rocket")])
    for _ in range(3):
        assert events.deliver(url, image).status_code == 200
    assert events.deliver(url, post).status_code == 200
    work(conn, feishu_settings)

    [first] = feishu.replies_to(image["event"]["message"]["message_id"])
    assert words(first.text) == "harbor window 42"
    post_replies = feishu.replies_to(post["event"]["message"]["message_id"])
    assert [words(r.text) for r in post_replies] == ["image 1: copper lantern", "image 2: velvet rocket"]

    # A re-send after the reply: acknowledged, not read again, not answered again.
    assert events.deliver(url, image).json()["status"] == "duplicate"
    work(conn, feishu_settings)
    assert len(feishu.all_replies()) == 3
    stored = LocalStore(feishu_settings.data_dir / "results.sqlite3")
    assert stored.count() == 3 and "harbor" in stored.search("harbor")[0].text


def test_expired_token_and_rate_limited_reply_are_recovered(webhook, events, feishu, conn, feishu_settings, group):
    url = f"{webhook}/feishu/events"
    events.deliver(url, events.image(group, picture("summer garden")))
    work(conn, feishu_settings)
    feishu.expire_tokens()
    feishu.throttle("reply", 1)
    late = events.image(group, picture("winter forest"))
    events.deliver(url, late)
    work(conn, feishu_settings)
    [reply] = feishu.replies_to(late["event"]["message"]["message_id"])
    assert words(reply.text) == "winter forest"
    assert feishu.count("invalid_token") >= 1 and feishu.count("rate_limited_reply") == 1
    assert len(feishu.all_replies()) == 2


def test_unreadable_image_gets_a_reason_not_silence(webhook, events, feishu, conn, feishu_settings, group):
    bad = events.image(group, b"this is not an image at all")
    events.deliver(f"{webhook}/feishu/events", bad)
    work(conn, feishu_settings)
    [reply] = feishu.replies_to(bad["event"]["message"]["message_id"])
    assert reply.text == "This is not a picture: I read pictures, screenshots and PDFs."
    assert reply.content["header"]["template"] == "red" and "not an image" in json.dumps(reply.content)  # the reason, in small print


def test_image_feishu_will_not_hand_over_gets_a_reason(webhook, events, feishu, conn, feishu_settings, group):
    payload = events.image(group, picture("anything"))
    message = payload["event"]["message"]
    feishu.fail_resource(message["message_id"], json.loads(message["content"])["image_key"], 234043, "Unsupported message type.")
    events.deliver(f"{webhook}/feishu/events", payload)
    work(conn, feishu_settings)
    [reply] = feishu.replies_to(message["message_id"])
    assert reply.text == "Feishu did not hand this picture over to me, so I could not read it."
    small_print = json.dumps(reply.content, ensure_ascii=False)
    assert "234043" in small_print and "forwarded bundles and cards" in small_print
    [job] = jobs_for(get_bot(feishu_settings, "default"), parse_event(payload))
    assert job_state(conn, job.job_id).status == "failed"


def test_a_burst_is_queued_as_one_job_that_a_worker_expands_in_order(events, feishu, conn, feishu_settings, group):
    from bots.feishu.intake import EXPAND, Intake
    from ocr_core.queue import intake_queue

    payloads = [events.post(group, [picture("copper lantern"), picture("velvet rocket")]), events.image(group, picture("summer garden"))]
    intake = Intake(get_bot(feishu_settings, "default"), feishu_settings, conn)
    outcomes = intake.take_all([parse_event(p) for p in payloads] + [parse_event(payloads[1])])
    assert [o.status for o in outcomes] == ["queued", "queued", "duplicate"]
    # A later re-send still queues a batch job, but one that owns nothing.
    assert [o.status for o in intake.take_all([parse_event(payloads[0])])] == ["duplicate"]
    first, second = intake_queue(conn, feishu_settings).get_jobs()
    assert first.func_name == second.func_name == EXPAND
    work(conn, feishu_settings)
    assert first.latest_result().return_value == {"queued": 3, "skipped": 0, "commands": 0}
    assert second.latest_result().return_value == {"queued": 0, "skipped": 0, "commands": 0}
    texts = sorted(words(r.text) for r in feishu.all_replies())
    # A post without words: its first image's reply carries no label (the job cannot tell it from a lone image).
    assert texts == ["copper lantern", "image 2: velvet rocket", "summer garden"]


def test_a_batch_that_outlived_its_claims_still_reads_its_images(events, feishu, conn, feishu_settings, group):
    from bots.feishu.intake import Intake

    payload = events.image(group, picture("harbor window"))
    Intake(get_bot(feishu_settings, "default"), feishu_settings, conn).take_all([parse_event(payload)])
    for key in conn.keys("ocrhub:feishu:seen:*"):
        conn.delete(key)
    work(conn, feishu_settings)
    assert [words(r.text) for r in feishu.all_replies()] == ["harbor window"]
