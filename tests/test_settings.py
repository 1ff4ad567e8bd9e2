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


def test_settings_print_as_an_env_file_takes_them_back(monkeypatch, tmp_path):
    from ocrhub.settings import env_lines

    configured = {
        "OCRHUB_RETRY_INTERVALS": "5,30,120",
        "OCRHUB_VLLM_URLS": "http://gpu1:8000,http://gpu2:8000",
        "OCRHUB_VLLM_CONCURRENCY": "auto",
        "OCRHUB_SINKS": '{"kb": "notion://0123456789abcdef0123456789abcdef?rate=2&title={sender} {date}", "out": "local:///srv/kb.sqlite3"}',
        "OCRHUB_ROUTES": '{"feishu:*": ["feishu-reply", "kb"], "upload:*": ["out"]}',
        "OCRHUB_NOTION_PROPERTIES": '{"text": "内容", "engine": ""}',
        "OCRHUB_NOTION_TITLE": "{sender}'s note, $HOME # not a comment",
        "OCRHUB_FEISHU_BOTS": '{"sales": {"app_id": "cli_s", "app_secret": "", "reply_in_thread": true}}',
        "OCRHUB_FEISHU_REPLY_IN_THREAD": "true",
        "OCRHUB_WORKERS": "3",
    }
    for name, value in configured.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    original = load_settings()
    lines = env_lines(original, {"workers": "3 running"})
    assert "OCRHUB_RETRY_INTERVALS=5,30,120" in lines
    assert "OCRHUB_VLLM_URLS=http://gpu1:8000,http://gpu2:8000" in lines
    assert "OCRHUB_FEISHU_REPLY_IN_THREAD=true" in lines and "OCRHUB_WORKERS=3  # 3 running" in lines
    assert not [line for line in lines if "None" in line or "[" in line.partition("=")[2][:1]]

    for name in configured:
        monkeypatch.delenv(name)
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    again = load_settings()
    assert again.model_dump() == {**original.model_dump(), "redis_url": again.redis_url}  # unset is written as empty
    assert env_lines(again) == env_lines(original)
    assert again.notion_title == "{sender}'s note, $HOME # not a comment"


def test_no_secret_is_printed_and_every_one_is_known():
    from ocrhub.settings import env_lines, secret_values

    settings = load_settings(
        redis_url="redis://default:redis-password@redis:6379/0",
        feishu_app_secret="feishu-secret",
        api_token="api-token-value",
        sinks={"kb": "notion://ntn_token_value@https://www.notion.so/acme/Inbox-0123456789abcdef0123456789abcdef",
               "other": "notion://?database=0123456789abcdef0123456789abcdef&token=ntn_option_token"},
        feishu_bots={"sales": {"app_id": "cli_s", "app_secret": "bot-secret", "verification_token": "bot-verification"}},
    )
    shown = "\n".join(env_lines(settings))
    secrets = {"redis-password", "feishu-secret", "api-token-value", "ntn_token_value", "ntn_option_token", "bot-secret", "bot-verification"}
    for secret in secrets:
        assert secret not in shown
    assert secrets <= secret_values(settings)
    assert "OCRHUB_REDIS_URL=redis://****@redis:6379/0" in shown
    assert "OCRHUB_API_TOKEN=****" in shown and "OCRHUB_NOTION_TOKEN=\n" in shown  # set secrets masked, unset ones empty
    assert "notion://****@https://www.notion.so/acme/Inbox-0123456789abcdef0123456789abcdef" in shown
    assert "?database=0123456789abcdef0123456789abcdef&token=****" in shown
    assert '"app_secret": "****"' in shown and '"verification_token": "****"' in shown and '"encrypt_key": ""' in shown
