"""Secrets a hub makes for itself: the API token (unless OCRHUB_API_TOKEN is set) and the embedded
Redis's password, each generated once into the data folder, readable by its owner only."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ocrhub.settings import Settings

TOKEN_FILE = "api-token"
REDIS_PASSWORD_FILE = "redis-password"


def token_file(settings: Settings) -> Path:
    return settings.data_dir / TOKEN_FILE


def api_token(settings: Settings, *, create: bool = False) -> str:
    """The token in force; with `create`, generate and store one when there is none yet.

    Empty only when neither the setting nor the file exists and `create` is false."""
    configured = settings.api_token.get_secret_value().strip()
    if configured:
        return configured
    return stored_secret(token_file(settings), create=create)


def redis_password(settings: Settings) -> str:
    """The embedded redis-server's password (`requirepass`), made at its first start."""
    return stored_secret(settings.data_dir / REDIS_PASSWORD_FILE, create=True)


def stored_secret(path: Path, *, create: bool) -> str:
    try:
        stored = path.read_text().strip()
    except FileNotFoundError:
        stored = ""
    if stored or not create:
        return stored
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = secrets.token_urlsafe(32)
    # Written whole under a private name, then linked into place: a process starting beside this one
    # (the API and the workers at a hub's first start) finds either no file or the whole secret,
    # and the first to link wins for both.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the start
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        os.link(temporary, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        temporary.unlink(missing_ok=True)
    return secret
