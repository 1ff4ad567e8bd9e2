"""Settings: environment and .env, and refusals that name the variable to fix."""

from __future__ import annotations

import pytest

from ocrhub.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OCRHUB_WORKERS", "many"),
        ("OCRHUB_WORKERS", "-1"),
        ("OCRHUB_RETRY_INTERVALS", "5,soon"),
        ("OCRHUB_MAX_IMAGE_PIXELS", "0"),
        ("OCRHUB_SINKS", "{kb: notion}"),
        ("OCRHUB_LOG_LEVEL", "LOUD"),
        ("OCRHUB_API_PORT", "70000"),
    ],
)
def test_invalid_values_name_the_setting(monkeypatch, tmp_path, name, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert name in str(caught.value)


def test_env_file_and_parsing(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text('OCRHUB_RETRY_INTERVALS=1, 2,3\nOCRHUB_ROUTES={"oc_1": ["local", "kb"]}\nOCRHUB_WORKERS=3\n')
    settings = load_settings()
    assert settings.retry_intervals == [1, 2, 3]
    assert settings.routes == {"oc_1": ["local", "kb"]}
    assert settings.worker_count == 3 and settings.threads_per_engine == 1
    monkeypatch.setenv("OCRHUB_WORKERS", "1")
    assert load_settings().threads_per_engine == 0  # one worker: let onnxruntime use every core


def test_vllm_settings_are_parsed_and_checked():
    settings = load_settings(vllm_urls="http://gpu1:8000/v1, http://gpu2:8000/", vllm_concurrency="AUTO", tasks={"oc_1": "fields:金额,日期"})
    assert settings.vllm_urls == ["http://gpu1:8000", "http://gpu2:8000"]
    assert settings.vllm_concurrency == "auto"
    assert load_settings(vllm_concurrency="24").vllm_concurrency == 24
    for name, value in [("vllm_urls", "gpu1:8000"), ("vllm_concurrency", "0"), ("vllm_task", "ocr"), ("tasks", {"oc_1": "translate:fr"})]:
        with pytest.raises(SettingsError, match=f"OCRHUB_{name.upper()}"):
            load_settings(**{name: value})


@pytest.mark.parametrize(
    ("engine", "concurrency", "workers", "threads"),
    [("rapidocr", "16", 2, 1), ("vllm", "16", 2, 11), ("vllm", "4", 8, 2), ("vllm", "auto", 1, 64)],
)
def test_a_vllm_worker_runs_enough_threads_to_fill_the_limit(engine, concurrency, workers, threads):
    settings = load_settings(ocr_engine=engine, vllm_urls="http://gpu:8000", vllm_concurrency=concurrency, workers=workers)
    assert settings.threads_per_worker == threads


def test_tasks_follow_the_route_lookup():
    from ocr_core.job import ImageJob
    from ocr_core.routes import task_for

    job = ImageJob(platform="feishu", bot_id="b", chat_id="oc_1", message_id="m", image_key="k")
    assert task_for(job, {"oc_1": "markdown", "feishu:*": "spotting"}, "text") == "markdown"
    assert task_for(job, {"feishu:*": "spotting"}, "text") == "spotting"
    assert task_for(job, {}, "text") == "text"
