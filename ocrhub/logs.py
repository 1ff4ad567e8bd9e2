"""Logging for every ocrhub process: plain or JSON lines on stderr, the job id on each line, never a secret.

Code that works on one image wraps the work in `job_context(job_id)`; every line logged inside,
by ocrhub or by a library, carries that id (`job_id` in JSON, `[id]` in plain lines).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone

from ocrhub.settings import SECRET_SHOWN, Settings, secret_values

# Libraries that log every request at INFO (httpx: each Notion and Feishu URL): kept to WARNING
# unless OCRHUB_LOG_LEVEL=DEBUG.
NOISY_LOGGERS = ("httpx", "httpcore")

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s%(job_tag)s: %(message)s"

# Shorter values are not secrets worth hiding, and replacing them would garble every line.
MIN_SECRET_LENGTH = 4

_job_id: ContextVar[str | None] = ContextVar("ocrhub_job_id", default=None)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every log line inside carries `job_id`; usable as `with job_context(id):` and as a decorator."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


def current_job_id() -> str | None:
    return _job_id.get()


class JobIdFilter(logging.Filter):
    """Stamps each record with the job in hand when it was logged (`extra={"job_id": …}` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "job_id", None):
            record.job_id = _job_id.get()
        return True


class RedactSecrets(logging.Filter):
    """The last line of defence: a known secret in a message, its arguments or a traceback becomes ****."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        known = set(self._secrets) | {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is replaced whole. Swapped in one
        # assignment: other threads may be logging.
        self._secrets = tuple(sorted(known, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, SECRET_SHOWN)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's to report, not ours
            return True
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        record.job_tag = f" [{job_id}]" if job_id else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, job_id when known, exception when any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id:
            entry["job_id"] = job_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class OcrhubHandler(logging.StreamHandler):
    """The one handler ocrhub puts on the root logger; found again by its class to be replaced."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(sys.stderr)
        self.redactor = RedactSecrets(_known_secrets(settings))
        self.addFilter(JobIdFilter())
        self.addFilter(self.redactor)
        self.setFormatter(JsonFormatter() if settings.log_json else PlainFormatter())


def setup_logging(settings: Settings) -> None:
    """Root logger at OCRHUB_LOG_LEVEL through one ocrhub handler; calling again replaces it."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, OcrhubHandler)]:
        root.removeHandler(handler)
        handler.close()
    root.addHandler(OcrhubHandler(settings))
    root.setLevel(settings.log_level)
    quiet = logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)


def add_secret(*values: str) -> None:
    """Redact these too from now on: secrets obtained at run time (a generated API token, a tenant token)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, OcrhubHandler):
            handler.redactor.add(*values)


def _known_secrets(settings: Settings) -> set[str]:
    from ocrhub.auth import api_token

    secrets = secret_values(settings)
    try:
        secrets.add(api_token(settings))  # the generated one, when a hub made it already
    except OSError:
        pass
    return secrets
