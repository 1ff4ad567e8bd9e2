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
