"""End to end with `ocrhub up`: its embedded redis-server, the API under uvicorn and worker processes,
against the emulated Feishu open platform. The issue's "Done when", in one run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bots.feishu.crypto import signature
from ocr_core.job import ImageJob
from ocr_core.queue import ocr_job_id
from tests.emulators.feishu import App, Events, FeishuEmulator, chat_id
from tests.hub_process import Hub, running_hub
from tests.imagegen import encode, text_image

def picture(*lines: str) -> bytes:
    return encode(text_image(list(lines), size=48), "PNG")


def words(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.fixture
def hub(tmp_path: Path, feishu: FeishuEmulator, app: App) -> Iterator[Hub]:
    with running_hub(
        tmp_path,
        OCRHUB_WORKERS="2",
        OCRHUB_RETRY_INTERVALS="1,2,4",
        **feishu.hub_settings(app),
    ) as running:
        yield running


def job_for(payload: dict, index: int = 0) -> ImageJob:
    message = payload["event"]["message"]
    content = json.loads(message["content"])
    keys = [content["image_key"]] if "image_key" in content else [e["image_key"] for p in content["content"] for e in p if e["tag"] == "img"]
    return ImageJob("feishu", "default", message["chat_id"], message["message_id"], keys[index])


def refused_requests(events: Events) -> dict[str, tuple[dict[str, str], bytes, ImageJob]]:
    """Each attack on a genuine-looking image event, with the job it must not create."""
    attacks = {}
    for attack in ("forged signature", "stale timestamp", "broken encryption", "malformed json"):
        payload = events.image(chat_id(), picture("never read"))
        stale = str(int(time.time()) - 3600) if attack == "stale timestamp" else None
        headers, body = events.seal(payload, timestamp=stale)
        if attack == "forged signature":
            headers["X-Lark-Signature"] = signature(headers["X-Lark-Request-Timestamp"], headers["X-Lark-Request-Nonce"], "a guessed key", body)
        elif attack in ("broken encryption", "malformed json"):
            sealed = json.loads(body)["encrypt"]
            body = json.dumps({"encrypt": sealed[:-8] + "AAAAAAA="}).encode() if attack == "broken encryption" else body[:-5]
            headers["X-Lark-Signature"] = signature(headers["X-Lark-Request-Timestamp"], headers["X-Lark-Request-Nonce"], events.app.encrypt_key, body)
        attacks[attack] = (headers, body, job_for(payload))
    return attacks


def test_group_images_come_back_as_text_exactly_once(hub: Hub, feishu: FeishuEmulator, events: Events):
    webhook = f"{hub.url}/feishu/events"
    group = chat_id()

    attacks = refused_requests(events)
    for attack, (headers, body, job) in attacks.items():
        response = httpx.post(webhook, content=body, headers=headers, timeout=10)
        assert 400 <= response.status_code < 500, (attack, response.status_code, response.text)
        assert not hub.conn.exists(f"rq:job:{ocr_job_id(job.job_id)}"), attack
        assert not hub.conn.exists(f"ocrhub:feishu:seen:default:message:{job.message_id}"), attack

    image = events.image(group, picture("harbor window 42"))
    post = events.post(group, ["two receipts", picture("copper lantern"), picture("velvet rocket")])
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: events.deliver(webhook, image), range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert sorted(a.json()["status"] for a in answers) == ["duplicate", "duplicate", "queued"]
    assert events.deliver(webhook, post).json()["status"] == "queued"

    feishu.wait_for_replies(3, timeout=180)
    [first] = feishu.replies_to(image["event"]["message"]["message_id"])
    assert words(first.text) == "harbor window 42"
    # Two workers read the post's images side by side: the labels, not the arrival order, say which is which.
    assert sorted(words(r.text) for r in feishu.replies_to(post["event"]["message"]["message_id"])) == [
        "image 1: copper lantern",
        "image 2: velvet rocket",
    ]

    # Feishu re-sends once more after the reply: acknowledged, nothing read or posted again.
    assert events.deliver(webhook, image).json()["status"] == "duplicate"

    # Tokens die early and Feishu throttles the next reply: both recovered, nothing lost.
    feishu.expire_tokens()
    feishu.throttle("reply", 1)
    late = events.image(group, picture("winter forest"))
    assert events.deliver(webhook, late).json()["status"] == "queued"
    feishu.wait_for_replies(4, timeout=120)
    [reply] = feishu.replies_to(late["event"]["message"]["message_id"])
    assert words(reply.text) == "winter forest"
    assert feishu.count("invalid_token") >= 1 and feishu.count("rate_limited_reply") == 1

    time.sleep(2)
    replies = feishu.all_replies()
    assert len(replies) == 4, replies
    assert len({r.uuid for r in replies}) == 4
    for attack, (_h, _b, job) in attacks.items():
        assert feishu.replies_to(job.message_id) == [], attack
