"""`ocrhub up` on the vllm engine, against the vLLM emulator: limit held across worker processes, outage, SIGKILL."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import pytest

from ocr_core.limits.leases import PREFIX
from ocr_core.vllm.servers import server_id
from tests.emulators.vllm import VllmEmulator
from tests.emulators.vllm_prompt import pixel_text_image
from tests.hub_process import Hub, running_hub


@pytest.fixture
def emulator() -> Iterator[VllmEmulator]:
    with VllmEmulator(max_num_seqs=4, step_base=0.01) as vllm:
        yield vllm


def png(text: str) -> bytes:
    out = io.BytesIO()
    pixel_text_image(text).save(out, "PNG")
    return out.getvalue()


def upload(hub: Hub, texts: list[str]) -> list[str]:
    paths = []
    for text in texts:
        response = hub.post("/api/images", files={"file": ("x.png", png(text))}, timeout=10)
        assert response.status_code == 202, response.text
        paths.append(response.json()["status_url"])
    return paths


def wait_read(hub: Hub, paths: list[str], timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    bodies = {}
    while len(bodies) < len(paths):
        for path in paths:
            if path not in bodies:
                body = httpx.get(urljoin(hub.url, path), headers=hub.headers, timeout=5).json()
                if body["status"] in {"finished", "failed"}:
                    bodies[path] = body
        assert time.monotonic() < deadline, f"{len(paths) - len(bodies)} unread\n{hub.tail()}"
        time.sleep(0.2)
    return [bodies[p] for p in paths]


def hub_settings(emulator: VllmEmulator, **extra: str) -> dict[str, str]:
    return {"OCRHUB_WORKERS": "2", "OCRHUB_OCR_ENGINE": "vllm", "OCRHUB_VLLM_URLS": emulator.url,
            "OCRHUB_VLLM_CONCURRENCY": "3", "OCRHUB_VLLM_TIMEOUT": "3", "OCRHUB_RETRY_INTERVALS": "1,2,5", **extra}


def test_images_are_read_through_vllm_within_one_limit_across_processes(tmp_path, emulator: VllmEmulator) -> None:
    texts = [" ".join(f"t{i}-{k}" for k in range(25)) for i in range(24)]
    with running_hub(tmp_path, **hub_settings(emulator)) as hub:
        bodies = wait_read(hub, upload(hub, texts))
        assert [b["text"] for b in bodies] == texts
        assert {b["engine"] for b in bodies} == {"vllm"}
        stats = emulator.stats()
        assert stats["peak_inflight"] == 3  # the limit, reached and never passed, by two processes together
        engine = hub.get("/api/engine").json()
        [server] = engine["vllm"]["servers"]
        assert (server["limit"], server["in_flight"], server["state"]) == (3, 0, "closed")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
        status = subprocess.run([sys.executable, "-m", "ocrhub.cli", "vllm-status"], env={**env, **hub_settings(emulator), "OCRHUB_DATA_DIR": str(hub.data)},
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        assert f"{emulator.url}: limit 3 (target 3), in flight 0, circuit closed" in status.stdout


def test_an_outage_loses_nothing_and_spends_no_retries(tmp_path, emulator: VllmEmulator) -> None:
    texts = [f"outage {i} " + "x" * (i + 1) for i in range(12)]
    with running_hub(tmp_path, **hub_settings(emulator)) as hub:
        wait_read(hub, upload(hub, ["warm"]))
        emulator.set(down=True)
        paths = upload(hub, texts)
        time.sleep(6)  # every worker finds the server gone: circuits open, jobs deferred back to Redis
        server = hub.get("/api/engine").json()["vllm"]["servers"][0]
        assert server["state"] == "open", server
        emulator.set(down=False)
        bodies = wait_read(hub, paths, timeout=120)
        assert [b["status"] for b in bodies] == ["finished"] * len(texts)
        assert [b["text"] for b in bodies] == texts
        failed = hub.get("/api/failed").json()["failed"]
        assert failed == []
    assert "deferred" in hub.log.read_text()


def test_a_sigkilled_worker_gives_its_permits_back_within_seconds(tmp_path, emulator: VllmEmulator) -> None:
    emulator.set(step_base=0.03)  # long answers (about 3 s): a worker is caught holding permits
    texts = [" ".join(f"k{i}-{k}" for k in range(40)) for i in range(12)]
    with running_hub(tmp_path, **hub_settings(emulator, OCRHUB_VLLM_TIMEOUT="30")) as hub:
        key = f"{PREFIX}:server:{server_id(emulator.url)}:leases"
        paths = upload(hub, texts)
        deadline = time.monotonic() + 60
        while not (held := [m.decode() for m in hub.conn.zrange(key, 0, -1)]):
            assert time.monotonic() < deadline, hub.tail()
            time.sleep(0.02)
        victim = int(held[0].split("/")[1])
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        def live() -> list[bytes]:  # leases whose expiry (Redis time, ms) is still ahead
            seconds, micros = hub.conn.time()
            return hub.conn.zrangebyscore(key, seconds * 1000 + micros // 1000, "+inf")

        while any(f"/{victim}/" in m.decode() for m in live()):
            assert time.monotonic() - killed < 20, "the dead worker's permits never came back"
            time.sleep(0.1)
        assert time.monotonic() - killed < 11  # the lease time (8 s), not the job timeout
        bodies = wait_read(hub, paths, timeout=120)
        assert [b["text"] for b in bodies] == texts
