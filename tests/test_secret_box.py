"""Secrets sealed for Redis: they open with the hub's key only, and the generated key is private."""

from __future__ import annotations

import pytest

from ocrhub.secret_box import KEY_FILE, SecretBox, SecretBoxError


def test_a_sealed_secret_opens_with_the_same_key_only():
    sealed = SecretBox("key one").seal("app-secret-123")
    assert "app-secret-123" not in sealed
    assert SecretBox("key one").open(sealed) == "app-secret-123"
    with pytest.raises(SecretBoxError):
        SecretBox("key two").open(sealed)


def test_the_same_secret_seals_differently_each_time():
    box = SecretBox("k")
    assert box.seal("s") != box.seal("s")


def test_a_damaged_value_does_not_open():
    box = SecretBox("k")
    sealed = box.seal("secret")
    damaged = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(SecretBoxError):
        box.open(damaged)
    with pytest.raises(SecretBoxError):
        box.open("plain text")


def test_the_generated_key_is_private_and_kept(settings):
    first = SecretBox.for_settings(settings).seal("x")
    path = settings.data_dir / KEY_FILE
    assert path.stat().st_mode & 0o077 == 0
    assert SecretBox.for_settings(settings).open(first) == "x"


def test_the_configured_key_wins(settings, set_env):
    configured = set_env(secret_key="from-the-environment")
    assert SecretBox("from-the-environment").open(SecretBox.for_settings(configured).seal("y")) == "y"
    assert not (configured.data_dir / KEY_FILE).exists()
