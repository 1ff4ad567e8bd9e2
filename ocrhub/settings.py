"""The one settings object: environment variables prefixed OCRHUB_, or a .env file."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "OCRHUB_"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "ocrhub"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    data_dir: Path = Field(default_factory=default_data_dir, description="Where the embedded Redis and the local store keep their files.")
    redis_url: str | None = Field(default=None, description="Any Redis; unset starts an embedded redis-server under data_dir.")
    queue_name: str = "ocrhub"

    ocr_engine: str = Field(default="rapidocr", description="Engine alias (rapidocr) or 'package.module:Class'.")
    workers: Annotated[int, Field(ge=0, le=256)] = Field(default=0, description="Worker processes for `ocrhub up`; 0 = one per CPU core.")
    engine_threads: Annotated[int, Field(ge=0, le=256)] = Field(default=0, description="Threads per engine; 0 = one when several workers share the cores, else all cores.")

    max_image_pixels: Annotated[int, Field(gt=0)] = Field(default=60_000_000, description="Larger images are refused as decompression bombs.")
    max_image_bytes: Annotated[int, Field(gt=0)] = Field(default=30 * 1024 * 1024)
    tile_size: Annotated[int, Field(ge=256)] = Field(default=1600, description="Long side of one OCR tile, in pixels.")
    tile_overlap: Annotated[int, Field(ge=16)] = Field(default=200, description="Overlap between tiles; must exceed the tallest text line.")

    job_timeout: Annotated[int, Field(gt=0)] = 600
    retry_intervals: Annotated[list[int], NoDecode] = Field(default=[5, 30, 120, 600, 1800], description="Seconds between retries of a transient failure, comma-separated.")
    blob_ttl: Annotated[int, Field(gt=0)] = Field(default=7 * 24 * 3600, description="How long image bytes stay in Redis for retries.")
    cache_ttl: Annotated[int, Field(gt=0)] = Field(default=30 * 24 * 3600, description="How long a result is reused for the same image bytes.")

    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=0, le=65535)] = 8000

    sinks: dict[str, str] = Field(default_factory=dict, description="Named sinks as JSON: {\"kb\": \"notion://…\"}; 'local' is always defined.")
    routes: dict[str, list[str]] = Field(default_factory=dict, description="JSON: chat id (or 'platform:*') → sink names.")

    feishu_app_id: str = ""
    feishu_app_secret: SecretStr = SecretStr("")
    feishu_encrypt_key: SecretStr = SecretStr("")
    feishu_verification_token: SecretStr = SecretStr("")
    feishu_domain: str = "https://open.feishu.cn"

    notion_token: SecretStr = SecretStr("")
    notion_database_id: str = ""
    notion_base_url: str = "https://api.notion.com"

    log_level: str = "INFO"

    @field_validator("retry_intervals", mode="before")
    @classmethod
    def _split_intervals(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            return [int(p) for p in parts] if all(p.isdigit() for p in parts) else value
        return value

    @field_validator("retry_intervals")
    @classmethod
    def _non_negative(cls, value: list[int]) -> list[int]:
        if any(v < 0 for v in value):
            raise ValueError("intervals must be whole seconds >= 0")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @property
    def worker_count(self) -> int:
        return self.workers or (os.cpu_count() or 1)

    @property
    def threads_per_engine(self) -> int:
        if self.engine_threads:
            return self.engine_threads
        return 1 if self.worker_count > 1 else 0


class SettingsError(Exception):
    """Invalid configuration, described by the OCRHUB_ names a person sets."""


def describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        name = ENV_PREFIX + "_".join(str(p) for p in item["loc"] if isinstance(p, str)).upper()
        problems.append(f"{name}: {item['msg']} (got {item.get('input')!r})" if "input" in item else f"{name}: {item['msg']}")
    return "invalid settings:\n  " + "\n  ".join(problems)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
    except SourceError as exc:
        field = re.search(r'field "(\w+)"', str(exc))
        name = ENV_PREFIX + field.group(1).upper() if field else "a setting"
        raise SettingsError(f"invalid settings:\n  {name}: not valid JSON ({exc.__cause__ or exc})") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once; tests call `get_settings.cache_clear()` after changing the environment."""
    return load_settings()
