"""The one settings object: environment variables prefixed OCRHUB_, or a .env file."""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "OCRHUB_"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "ocrhub"


class FeishuBotSettings(BaseModel):
    """One further Feishu app in OCRHUB_FEISHU_BOTS; unset domain, group_policy, reply_in_thread take the OCRHUB_FEISHU_* values."""

    model_config = {"frozen": True, "extra": "forbid"}

    app_id: str
    app_secret: SecretStr
    encrypt_key: SecretStr = SecretStr("")
    verification_token: SecretStr = SecretStr("")
    domain: str = ""
    group_policy: Literal["all", "mention", ""] = ""
    bot_open_id: str = ""
    allow_unverified: bool = False
    reply_in_thread: bool | None = None
    mode: Literal["webhook", "long-connection", ""] = ""
    language: Literal["zh", "en", ""] = ""


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

    worker_threads: Annotated[int, Field(ge=0, le=256)] = Field(default=0, description="Jobs each worker process runs at once; 0 = 1 for CPU engines, enough to fill the vLLM limit for 'vllm'.")

    vllm_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, description="vLLM servers' base URLs (without /v1), comma-separated.")
    vllm_model: str = Field(default="tencent/HunyuanOCR", description="The served model name (vllm serve --served-model-name).")
    vllm_api_key: SecretStr = Field(default=SecretStr(""), description="vllm serve --api-key, if set.")
    vllm_concurrency: Annotated[int | Literal["auto"], NoDecode] = Field(default=16, description="Requests in flight per server across every worker, or 'auto' to follow the server's metrics.")
    vllm_min_concurrency: Annotated[int, Field(ge=1, le=1024)] = Field(default=1, description="Lowest limit 'auto' goes to.")
    vllm_max_concurrency: Annotated[int, Field(ge=1, le=1024)] = Field(default=64, description="Highest limit 'auto' goes to (per server).")
    vllm_kv_tokens: Annotated[int, Field(ge=0)] = Field(default=0, description="KV cache tokens ocrhub may claim per server; 0 = 90% of what the server's /metrics reports.")
    vllm_fallback: str = Field(default="wait", description="While no vLLM server takes requests: 'wait' (jobs stay queued) or an engine name, e.g. 'rapidocr'.")
    vllm_task: str = Field(default="text", description="Default OCR task: text, spotting, markdown, table, formula, chart, fields:A,B, translate:en|zh.")
    vllm_max_tokens: Annotated[int, Field(ge=16, le=32768)] = Field(default=4096, description="Longest answer per page, in tokens.")
    vllm_timeout: Annotated[float, Field(gt=0)] = Field(default=120.0, description="Seconds one request may take.")
    vllm_max_side: Annotated[int, Field(ge=256, le=4096)] = Field(default=1024, description="Longest side of a page sent to the model, in pixels.")
    vllm_stop_repeats: bool = Field(default=True, description="Stop a streamed answer (and trim it) once it starts repeating itself.")
    tasks: dict[str, str] = Field(default_factory=dict, description="JSON: chat id, 'platform:bot' or 'platform:*' → OCR task for the vllm engine.")

    max_image_pixels: Annotated[int, Field(gt=0)] = Field(default=60_000_000, description="Larger images are refused as decompression bombs.")
    max_image_bytes: Annotated[int, Field(gt=0)] = Field(default=30 * 1024 * 1024)
    max_pdf_pages: Annotated[int, Field(ge=1, le=2000)] = Field(default=20, description="Pages read of one PDF; a longer PDF gets a reply saying so, and no page is read.")
    tile_size: Annotated[int, Field(ge=256)] = Field(default=1600, description="Long side of one OCR tile, in pixels.")
    tile_overlap: Annotated[int, Field(ge=16)] = Field(default=200, description="Overlap between tiles; must exceed the tallest text line.")

    job_timeout: Annotated[int, Field(gt=0)] = Field(default=180, description="Seconds one job may run; also how soon a job of a killed worker is retried.")
    retry_intervals: Annotated[list[int], NoDecode] = Field(default=[5, 30, 120, 600, 1800], description="Seconds between retries of a transient failure, comma-separated.")
    blob_ttl: Annotated[int, Field(gt=0)] = Field(default=7 * 24 * 3600, description="Upper bound on how long image bytes stay in Redis: they go as soon as no job or delivery needs them.")
    failed_blob_ttl: Annotated[int, Field(ge=0)] = Field(default=24 * 3600, description="How long the image bytes of a job or delivery that failed for good stay in Redis, for an admin's requeue; never past blob_ttl; 0 = not kept.")
    cache_ttl: Annotated[int, Field(gt=0)] = Field(default=30 * 24 * 3600, description="How long a result is reused for the same image bytes.")

    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=0, le=65535)] = 8000
    api_token: SecretStr = Field(default=SecretStr(""), description="Bearer token for /api/* and the API docs; unset: `ocrhub up` generates one into data_dir/api-token (mode 0600).")
    public_url: str = Field(default="", description="The hub's public origin (https://ocr.example.com), for the webhook URLs the admin page shows; unset: the origin the page was opened at.")
    admin_password: SecretStr = Field(default=SecretStr(""), description="Password of the admin page (/admin); unset: the hash `ocrhub admin set-password` stored, else the page is off. Refused if short or a placeholder.")
    admin_session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = Field(default=12.0, description="Hours an admin stays signed in without using the page.")
    secret_key: SecretStr = Field(default=SecretStr(""), description="Key that seals secrets kept in Redis (bots configured on the admin page); unset: generated into data_dir/secret-key.")
    metrics_public: bool = Field(default=True, description="/metrics answers without the API token (for a Prometheus on the same network).")
    request_timeout: Annotated[float, Field(gt=0)] = Field(default=30.0, description="Seconds a client may take to send a request's headers and body.")

    redis_port: Annotated[int, Field(ge=0, le=65535)] = Field(default=0, description="Port of the embedded redis-server; 0 = a free one, published in data_dir/hub.json.")
    redis_maxmemory: Annotated[int, Field(ge=0)] = Field(default=1024 * 1024 * 1024, description="Memory cap of the embedded redis-server in bytes (no eviction); 0 = none.")
    intake_memory_fraction: Annotated[float, Field(gt=0, le=1)] = Field(default=0.8, description="Webhooks and uploads answer 503 once Redis uses this fraction of its maxmemory.")

    sinks: dict[str, str] = Field(default_factory=dict, description="Named sinks as JSON: {\"kb\": \"notion://…\"}; 'local' is always defined.")
    routes: dict[str, list[str]] = Field(default_factory=dict, description="JSON: chat id (or 'platform:*') → sink names.")

    feishu_app_id: str = ""
    feishu_app_secret: SecretStr = SecretStr("")
    feishu_encrypt_key: SecretStr = SecretStr("")
    feishu_verification_token: SecretStr = SecretStr("")
    feishu_domain: str = "https://open.feishu.cn"
    feishu_group_policy: Literal["all", "mention"] = Field(default="all", description="In group chats read every image, or only messages that @ the bot.")
    feishu_bot_open_id: str = Field(default="", description="The bot's open_id (ou_…); needed by group policy 'mention'.")
    feishu_replay_window: Annotated[int, Field(ge=0)] = Field(default=300, description="Refuse webhook requests whose X-Lark-Request-Timestamp is further than this many seconds from now; 0 = no window.")
    feishu_dedupe_ttl: Annotated[int, Field(ge=8 * 3600)] = Field(default=24 * 3600, description="How long a message_id is remembered; Feishu re-sends for up to ~7 h.")
    feishu_allow_unverified: bool = Field(default=False, description="Accept events for a bot with neither Encrypt Key nor Verification Token (anyone could post jobs).")
    feishu_mode: Literal["webhook", "long-connection"] = Field(default="webhook", description="How the bots' events arrive: 'webhook' (served at /feishu/events, needs an Encrypt Key or Verification Token) or 'long-connection' (`ocrhub feishu-connect`; no webhook is served, none of them needed).")
    feishu_reply_in_thread: bool = Field(default=False, description="Replies open a thread under the image instead of quoting it in the chat.")
    feishu_language: Literal["zh", "en"] = Field(default="en", description="The language of the bot's replies and messages (zh or en); per bot in OCRHUB_FEISHU_BOTS or on the admin page.")
    feishu_reply_format: Literal["card", "text"] = Field(default="card", description="Replies as a message card (the text collapsed when long, the engine and time beneath) or as plain text.")
    feishu_bots: dict[str, FeishuBotSettings] = Field(default_factory=dict, description="Further Feishu apps as JSON: {\"sales\": {\"app_id\": …, \"app_secret\": …, \"encrypt_key\": …}}; served at /feishu/<id>/events.")

    notion_token: SecretStr = SecretStr("")
    notion_database_id: str = ""
    notion_base_url: str = "https://api.notion.com"
    notion_properties: dict[str, str] = Field(default_factory=dict, description="JSON: column → your property name, e.g. {\"text\": \"内容\", \"sender\": \"发送者\"}; \"\" leaves an optional column out (see docs/notion.md).")
    notion_title: str = Field(default="", description="Page title template, e.g. \"{date} {sender}: {first_line}\"; empty = the first meaningful line.")

    log_level: str = "INFO"
    log_json: bool = Field(default=False, description="One JSON object per log line, with the job id where there is one.")

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

    @field_validator("vllm_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            value = [u.strip() for u in value.split(",") if u.strip()]
        if isinstance(value, list):
            for url in value:
                if not re.match(r"^https?://[^/\s]+", str(url)):
                    raise ValueError(f"{url!r} is not an http(s) base URL such as http://vllm:8000")
            return [str(u).rstrip("/").removesuffix("/v1") for u in value]
        return value

    @field_validator("vllm_concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if value == "auto":
                return value
            if not value.isdigit() or int(value) < 1:
                raise ValueError("use a whole number of requests per server (e.g. 16) or 'auto'")
            return int(value)
        return value

    @field_validator("vllm_task", "tasks")
    @classmethod
    def _known_task(cls, value: object) -> object:
        from ocr_core.vllm.prompts import prompt_for

        for task in ([value] if isinstance(value, str) else list(value.values())):  # type: ignore[union-attr]
            prompt_for(task)
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
    def threads_per_worker(self) -> int:
        """Jobs one worker process runs at once: a remote engine waits on the network, not the CPU."""
        if self.worker_threads:
            return self.worker_threads
        if self.ocr_engine != "vllm":
            return 1
        per_server = self.vllm_max_concurrency if self.vllm_concurrency == "auto" else int(self.vllm_concurrency)
        wanted = per_server * max(1, len(self.vllm_urls)) * 5 // 4 + 1  # a few more than the limit: the next request is ready
        return max(2, min(64, -(-wanted // self.worker_count)))

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


# Showing settings: in the form OCRHUB_<NAME>= accepts, secrets never in clear.

SECRET_SHOWN = "****"
# Query options of a URL (a sink's, Redis's) whose value is a credential.
SECRET_OPTION_WORDS = ("token", "secret", "key", "password", "auth")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# What an env file takes unquoted: no blanks, quotes, '#' (a comment) or '$' (dotenv and compose expand ${…}).
_BARE = re.compile(r"[\w./:,@%+*?&=~{}\[\]-]*")


def mask_url(url: str) -> str:
    """`url` as written, its user part and secret-looking option values replaced by ****."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.partition("://")[0] + "://" + SECRET_SHOWN
    userinfo, _, host = parts.netloc.rpartition("@")
    options = []
    for option in parts.query.split("&") if parts.query else []:
        key, equals, _value = option.partition("=")
        options.append(f"{key}={SECRET_SHOWN}" if equals and _is_secret_option(key) else option)
    return (
        f"{parts.scheme}://{SECRET_SHOWN + '@' if userinfo else ''}{host}{parts.path}"
        + ("?" + "&".join(options) if options else "")
        + ("#" + parts.fragment if parts.fragment else "")
    )


def url_secrets(url: str) -> set[str]:
    """The credentials written in a URL, as written and decoded: what mask_url hides."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return set()
    user, colon, password = parts.netloc.rpartition("@")[0].partition(":")
    found = [password if colon else user]  # a user part without a password is a token: notion://<token>@…
    for option in parts.query.split("&") if parts.query else []:
        key, equals, value = option.partition("=")
        if equals and _is_secret_option(key):
            found += [value, *(v for k, v in parse_qsl(option, keep_blank_values=True))]
    return {form for value in found for form in (value, unquote(value)) if form}


def _is_secret_option(key: str) -> bool:
    return any(word in unquote(key).lower() for word in SECRET_OPTION_WORDS)


def secret_values(settings: Settings) -> set[str]:
    """Every secret the settings hold: SecretStr values, nested ones included, and credentials in URLs."""
    found: set[str] = set()

    def collect(value: object) -> None:
        if isinstance(value, SecretStr):
            found.add(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                collect(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)
        elif isinstance(value, str) and _URL.match(value):
            found.update(url_secrets(value))

    collect(settings)
    found.discard("")
    return found


def _shown(value: object) -> object:
    if isinstance(value, SecretStr):
        return SECRET_SHOWN if value.get_secret_value() else ""
    if isinstance(value, BaseModel):
        return {name: _shown(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {key: _shown(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shown(item) for item in value]
    if isinstance(value, str) and _URL.match(value):
        return mask_url(value)
    if isinstance(value, Path):
        return str(value)
    return value


def env_text(settings: Settings, name: str) -> str:
    """The value of one setting as OCRHUB_<NAME>= takes it in an env file (comma lists, JSON, true/false), secrets masked."""
    value = _shown(getattr(settings, name))
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list) and NoDecode in Settings.model_fields[name].metadata:
        text = ",".join(str(item) for item in value)
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    if _BARE.fullmatch(text):
        return text
    if "'" not in text:
        return f"'{text}'"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def env_lines(settings: Settings, notes: dict[str, str] | None = None) -> list[str]:
    """Every setting as an env-file line, a note (what 0 or unset means in force) as a trailing comment."""
    lines = []
    for name in Settings.model_fields:
        line = f"{ENV_PREFIX}{name.upper()}={env_text(settings, name)}"
        note = (notes or {}).get(name)
        lines.append(f"{line}  # {note}" if note else line)
    return lines
