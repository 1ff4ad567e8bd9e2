"""Which failed jobs `ocrhub requeue` hands back: ids as listed, or an image's job id for its reading and deliveries.

The whole command, against a real failed delivery, is in tests/test_cli.py."""

from __future__ import annotations

import pytest
from rq.registry import FailedJobRegistry

from ocr_core.queue import delivery_job_id, delivery_queue, ocr_job_id, ocr_queue
from ocrhub.requeue import FailedJob, UnknownQueue, choose, failed_jobs


def test_an_image_job_id_names_its_reading_and_every_delivery_once(conn, settings):
    reading = FailedJobRegistry(queue=ocr_queue(conn, settings))
    delivering = FailedJobRegistry(queue=delivery_queue(conn, settings))
    read_a = FailedJob(reading, ocr_job_id("a"))
    kb_a, local_a = FailedJob(delivering, delivery_job_id("a", "kb")), FailedJob(delivering, delivery_job_id("a", "local"))
    local_b = FailedJob(delivering, delivery_job_id("b", "local"))
    failed = [read_a, kb_a, local_a, local_b]

    assert choose(failed, ["a", kb_a.job_id, "nobody"], every=False) == ([read_a, kb_a, local_a], ["nobody"])
    assert choose(failed, [local_b.job_id], every=False) == ([local_b], [])
    assert choose(failed, [], every=True) == (failed, [])
    assert choose(failed, ["b"], every=True) == (failed, [])  # --all with ids: each job once


def test_an_unknown_queue_names_the_hubs_queues(conn, settings):
    assert failed_jobs(conn, settings) == []
    with pytest.raises(UnknownQueue, match=f"no queue nope: the hub's queues are .*{settings.queue_name}-deliver"):
        failed_jobs(conn, settings, ["nope", settings.queue_name])
