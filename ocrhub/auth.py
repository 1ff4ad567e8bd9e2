"""The API token: OCRHUB_API_TOKEN, or one generated into the data folder by the first `ocrhub up`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ocrhub.settings import Settings

TOKEN_FILE = "api-token"


def token_file(settings: Settings) -> Path:
    return settings.data_dir / TOKEN_FILE


def api_token(settings: Settings, *, create: bool = False) -> str:
    """The token in force; with `create`, generate and store one (mode 0600) when there is none yet.

    Empty only when neither the setting nor the file exists and `create` is false."""
    configured = settings.api_token.get_secret_value().strip()
    if configured:
        return configured
    path = token_file(settings)
    try:
        stored = path.read_text().strip()
    except FileNotFoundError:
        stored = ""
    if stored or not create:
        return stored
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    # Created 0600 from the start: never a moment where another local user could read it.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
