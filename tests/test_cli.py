"""The `ocrhub` command as a user runs it: a real process, real files, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.imagegen import encode, text_image, words


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OCRHUB_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "ocrhub.cli", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def test_ocr_json_maps_each_path_as_typed_and_reports_failures(tmp_path):
    first, second = words(11, 2), words(12, 2)
    (tmp_path / "a.png").write_bytes(encode(text_image([" ".join(first)]), "PNG"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jpg").write_bytes(encode(text_image([" ".join(second)]), "JPEG", quality=92))
    (tmp_path / "broken.png").write_bytes(encode(text_image(["x"]), "PNG")[:60])

    result = run_cli("ocr", "--json", "./a.png", "sub/b.jpg", "missing.png", "broken.png", cwd=tmp_path, env={"OCRHUB_DATA_DIR": str(tmp_path / "d")})

    assert result.returncode == 1
    texts = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    assert list(texts) == ["./a.png", "sub/b.jpg"]
    assert texts["./a.png"].split() == first
    assert texts["sub/b.jpg"].split() == second
    assert "missing.png" in result.stderr and "broken.png" in result.stderr
    assert "truncated" in result.stderr or "corrupt" in result.stderr


def test_ocr_plain_output_and_success_exit(tmp_path):
    expected = words(21, 3)
    (tmp_path / "one.png").write_bytes(encode(text_image([" ".join(expected)]), "PNG"))
    result = run_cli("ocr", "one.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


def test_invalid_setting_is_refused_naming_it(tmp_path):
    result = run_cli("ocr", "x.png", cwd=tmp_path, env={"OCRHUB_TILE_SIZE": "tiny"})
    assert result.returncode != 0
    assert "OCRHUB_TILE_SIZE" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_file_is_honoured(tmp_path):
    (tmp_path / ".env").write_text("OCRHUB_MAX_IMAGE_BYTES=10\nOCRHUB_FEISHU_APP_SECRET=hunter2\n")
    (tmp_path / "one.png").write_bytes(encode(text_image(["hello"]), "PNG"))
    result = run_cli("ocr", "one.png", cwd=tmp_path)
    assert result.returncode == 1
    assert "10" in result.stderr  # the limit from .env is the one applied
    shown = run_cli("settings", cwd=tmp_path)
    assert "OCRHUB_MAX_IMAGE_BYTES=10" in shown.stdout
    assert "hunter2" not in shown.stdout and "OCRHUB_FEISHU_APP_SECRET=****" in shown.stdout
