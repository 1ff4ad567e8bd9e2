"""Secrets at rest in Redis: sealed with AES-256-GCM under a key only the hub's machines hold.

The key is OCRHUB_SECRET_KEY when set (any string; its SHA-256 is the key), else a random one
generated once into the data folder (`secret-key`, readable by its owner only). A Redis dump or
replica therefore shows no bot secret, and a sealed value moved to another hub does not open.
"""

from __future__ import annotations

import base64
import hashlib

from Crypto.Cipher import AES

from ocrhub.auth import stored_secret
from ocrhub.settings import Settings

KEY_FILE = "secret-key"
_PREFIX = "v1:"


class SecretBoxError(ValueError):
    """A sealed value that does not open: another hub's key, or damaged."""


class SecretBox:
    def __init__(self, key_material: str) -> None:
        if not key_material:
            raise ValueError("a secret box needs a key")
        self._key = hashlib.sha256(key_material.encode()).digest()

    @classmethod
    def for_settings(cls, settings: Settings) -> SecretBox:
        configured = settings.secret_key.get_secret_value().strip()
        return cls(configured or stored_secret(settings.data_dir / KEY_FILE, create=True))

    def seal(self, secret: str) -> str:
        cipher = AES.new(self._key, AES.MODE_GCM)
        sealed, tag = cipher.encrypt_and_digest(secret.encode())
        return _PREFIX + base64.urlsafe_b64encode(cipher.nonce + tag + sealed).decode()

    def open(self, sealed: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise SecretBoxError("not a sealed secret")
        raw = base64.urlsafe_b64decode(sealed[len(_PREFIX):].encode())
        nonce, tag, body = raw[:16], raw[16:32], raw[32:]
        try:
            return AES.new(self._key, AES.MODE_GCM, nonce=nonce).decrypt_and_verify(body, tag).decode()
        except ValueError:
            raise SecretBoxError("a stored secret does not open with this hub's key (OCRHUB_SECRET_KEY or data folder's secret-key)") from None
