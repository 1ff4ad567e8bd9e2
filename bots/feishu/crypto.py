"""Feishu's event signing and encryption: sha256 signature over the raw body, AES-256-CBC payloads.

The scheme is lark-oapi's (key = sha256(Encrypt Key), IV = the first 16 bytes, PKCS#7 padding), written
against pycryptodome directly: importing lark_oapi costs seconds, which the API process does not need to pay.
Encryption, which Feishu does on its side, exists here for the emulator and the benchmark.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from Crypto.Cipher import AES

BLOCK = AES.block_size


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def signature_matches(given: str, timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> bool:
    return hmac.compare_digest(given.encode(), signature(timestamp, nonce, encrypt_key, body).encode())


def token_matches(given: object, expected: str) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(given.encode(), expected.encode())


class Cipher:
    """One bot's cipher; the key digest is computed once, not per request."""

    def __init__(self, encrypt_key: str) -> None:
        self._key = hashlib.sha256(encrypt_key.encode()).digest()

    def decrypt(self, encrypted: str) -> bytes:
        """Raises ValueError for anything that is not a well-formed ciphertext under this key."""
        raw = base64.b64decode(encrypted, validate=True)
        if len(raw) < 2 * BLOCK or len(raw) % BLOCK:
            raise ValueError("ciphertext length is not a whole number of blocks")
        padded = AES.new(self._key, AES.MODE_CBC, raw[:BLOCK]).decrypt(raw[BLOCK:])
        pad = padded[-1]
        if not 1 <= pad <= BLOCK or padded[-pad:] != bytes([pad]) * pad:
            raise ValueError("bad PKCS#7 padding")
        return padded[:-pad]

    def encrypt(self, plaintext: bytes, iv: bytes | None = None) -> str:
        iv = iv or os.urandom(BLOCK)
        pad = BLOCK - len(plaintext) % BLOCK
        sealed = AES.new(self._key, AES.MODE_CBC, iv).encrypt(plaintext + bytes([pad]) * pad)
        return base64.b64encode(iv + sealed).decode()
