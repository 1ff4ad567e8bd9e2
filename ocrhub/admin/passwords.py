"""The admin password: from OCRHUB_ADMIN_PASSWORD, or a scrypt hash `ocrhub admin set-password` stored.

A short or placeholder password is refused when the hub starts, not at the first sign-in: an admin
page guarded by "changeme" is worse than none.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ocrhub.settings import Settings

HASH_FILE = "admin-password"
MIN_LENGTH = 12
# Lower-cased, with digits and punctuation taken away, these are what a template or a hurry leaves behind.
PLACEHOLDERS = {"changeme", "change", "password", "passwd", "admin", "administrator", "secret", "ocrhub", "default",
                "example", "test", "qwerty", "letmein", "yourpassword", "mypassword", "adminpassword", "xxxx", "todo"}
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AdminPasswordError(ValueError):
    """The configured admin password must not be used; the message says what to do instead."""


def weakness(password: str) -> str:
    """Why `password` must not guard the admin page, or "" when it may."""
    if len(password) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    letters = "".join(ch for ch in password.lower() if ch.isalpha())
    repeated = any(letters == word * (len(letters) // len(word)) for word in PLACEHOLDERS) if letters else True
    if repeated or len(set(password)) < 4:
        return "it is a placeholder, not a password"
    return ""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def _matches_hash(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=len(expected), **_SCRYPT)
    except (ValueError, TypeError):
        return False
    return scheme == "scrypt" and hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class Credential:
    """What a sign-in is checked against; never the password itself in a hash's case."""

    stored_hash: str

    def accepts(self, password: str) -> bool:
        return _matches_hash(password, self.stored_hash)


def hash_file(settings: Settings) -> Path:
    return settings.data_dir / HASH_FILE


def store_password(settings: Settings, password: str) -> Path:
    """Hash `password` into the data folder (mode 0600); raises AdminPasswordError for a weak one."""
    why = weakness(password)
    if why:
        raise AdminPasswordError(f"that password is refused: {why}")
    path = hash_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(hash_password(password) + "\n")
    temporary.replace(path)
    return path


def credential(settings: Settings) -> Credential | None:
    """The admin credential in force, or None when none is configured (the page then only says how
    to set one). Raises AdminPasswordError for a weak OCRHUB_ADMIN_PASSWORD."""
    configured = settings.admin_password.get_secret_value()
    if configured:
        why = weakness(configured)
        if why:
            raise AdminPasswordError(
                f"OCRHUB_ADMIN_PASSWORD is refused: {why}. Choose a longer one (at least {MIN_LENGTH} characters), "
                f"or unset it and run `ocrhub admin set-password`"
            )
        return Credential(hash_password(configured))
    try:
        stored = hash_file(settings).read_text().strip()
    except FileNotFoundError:
        return None
    return Credential(stored) if stored else None
