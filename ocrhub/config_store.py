"""Configuration the admin page edits, kept in Redis so every API and worker process sees a change
at once, without a restart. Secret fields are sealed (`SecretBox`) before they reach Redis.

Records are kept by kind ("feishu-bot", ...) and id; every change bumps one version number, which
readers compare before reloading, and is noted in a changes log (who, what, when; never a secret).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis

from ocrhub.secret_box import SecretBox

PREFIX = "ocrhub:config"
VERSION_KEY = f"{PREFIX}:version"
CHANGES_KEY = f"{PREFIX}:changes"
CHANGES_KEPT = 500
# How stale a process's view of the configuration may be: one Redis read per this many seconds.
RELOAD_S = 1.0
T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    at: float
    who: str
    action: str  # "add", "edit", "remove", "seed", ...
    kind: str
    record_id: str
    fields: tuple[str, ...]  # the names of the fields changed, never their values

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "who": self.who, "action": self.action, "kind": self.kind, "id": self.record_id, "fields": list(self.fields)}


class ConfigStore:
    def __init__(self, conn: redis.Redis, box: SecretBox) -> None:
        self.conn, self.box = conn, box

    def version(self) -> int:
        return int(self.conn.get(VERSION_KEY) or 0)

    def all(self, kind: str, secrets: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """Every record of `kind`, by id, with its `secrets` fields opened."""
        secret_fields = tuple(secrets)
        records = {}
        for record_id, raw in self.conn.hgetall(_key(kind)).items():
            record = json.loads(raw)
            for name in secret_fields:
                if record.get(name):
                    record[name] = self.box.open(record[name])
            records[record_id.decode()] = record
        return records

    def get(self, kind: str, record_id: str, secrets: Iterable[str] = ()) -> dict[str, Any] | None:
        raw = self.conn.hget(_key(kind), record_id)
        if raw is None:
            return None
        record = json.loads(raw)
        for name in secrets:
            if record.get(name):
                record[name] = self.box.open(record[name])
        return record

    def put(self, kind: str, record_id: str, record: dict[str, Any], *, secrets: Iterable[str] = (), who: str, action: str) -> None:
        """Store `record` whole (secret fields given in clear, sealed here) and note the change."""
        previous = self.get(kind, record_id, secrets) or {}
        sealed = dict(record)
        for name in secrets:
            if sealed.get(name):
                sealed[name] = self.box.seal(sealed[name])
        changed = tuple(sorted(name for name in set(record) | set(previous) if record.get(name) != previous.get(name)))
        with self.conn.pipeline() as pipe:
            pipe.hset(_key(kind), record_id, json.dumps(sealed, sort_keys=True))
            self._noted(pipe, Change(time.time(), who, action, kind, record_id, changed))
            pipe.execute()

    def remove(self, kind: str, record_id: str, *, who: str) -> bool:
        with self.conn.pipeline() as pipe:
            pipe.hdel(_key(kind), record_id)
            self._noted(pipe, Change(time.time(), who, "remove", kind, record_id, ()))
            removed, *_ = pipe.execute()
        return bool(removed)

    def changes(self, limit: int = 100) -> list[Change]:
        entries = [json.loads(raw) for raw in self.conn.lrange(CHANGES_KEY, 0, limit - 1)]
        return [Change(**{**entry, "fields": tuple(entry["fields"])}) for entry in entries]

    def _noted(self, pipe: redis.client.Pipeline, change: Change) -> None:
        pipe.incr(VERSION_KEY)
        entry = {**change.to_dict(), "record_id": change.record_id}
        entry.pop("id")
        pipe.lpush(CHANGES_KEY, json.dumps(entry))
        pipe.ltrim(CHANGES_KEY, 0, CHANGES_KEPT - 1)


def _key(kind: str) -> str:
    return f"{PREFIX}:{kind}"


class Reloading(Generic[T]):
    """A value built from the store, built again when the store's version has moved (looked at no
    more than every RELOAD_S): every process follows the admin page within a second."""

    def __init__(self, store: ConfigStore, build: Callable[[], T]) -> None:
        self.store, self.build = store, build
        self._checked_at = float("-inf")
        self._version = -1
        self._value: T | None = None

    def get(self) -> T:
        now = time.monotonic()
        if now - self._checked_at >= RELOAD_S:
            self._checked_at = now
            version = self.store.version()
            if version != self._version or self._value is None:
                self._value, self._version = self.build(), version
        return self._value  # type: ignore[return-value]
