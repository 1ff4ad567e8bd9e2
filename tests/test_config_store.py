"""The admin page's configuration in Redis: sealed secrets, a version that moves, a changes log without values."""

from __future__ import annotations

from ocrhub.config_store import ConfigStore
from ocrhub.secret_box import SecretBox


def test_records_round_trip_with_secrets_sealed_at_rest(conn):
    store = ConfigStore(conn, SecretBox("k"))
    store.put("thing", "a", {"name": "n", "token": "tok-123"}, secrets=("token",), who="admin@x", action="add")
    assert store.get("thing", "a", ("token",)) == {"name": "n", "token": "tok-123"}
    assert b"tok-123" not in conn.hget("ocrhub:config:thing", "a")
    assert store.all("thing", ("token",)) == {"a": {"name": "n", "token": "tok-123"}}


def test_every_change_moves_the_version_and_is_logged_by_field_name(conn):
    store = ConfigStore(conn, SecretBox("k"))
    before = store.version()
    store.put("thing", "a", {"name": "n", "token": "tok-123"}, secrets=("token",), who="admin@x", action="add")
    store.put("thing", "a", {"name": "m", "token": "tok-123"}, secrets=("token",), who="admin@y", action="edit")
    assert store.remove("thing", "a", who="admin@z")
    assert store.version() == before + 3
    latest, edit, add = store.changes(3)
    assert (latest.action, latest.who) == ("remove", "admin@z")
    assert edit.fields == ("name",) and set(add.fields) == {"name", "token"}
    assert "tok-123" not in str([c.to_dict() for c in store.changes()])
