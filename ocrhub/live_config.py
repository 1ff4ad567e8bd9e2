"""The settings in force for routing: OCRHUB_SINKS, OCRHUB_ROUTES and OCRHUB_TASKS under what the
admin page stored.

A sink or route saved on the admin page overrides the settings' one of the same name or key, and
`removed` hides one; every process sees a change within a second, without a restart. Sink URLs are
kept sealed (they carry tokens, e.g. notion://ntn_…@db).
"""

from __future__ import annotations

import redis

from ocrhub.config_store import ConfigStore, Reloading
from ocrhub.secret_box import SecretBox, SecretBoxError
from ocrhub.settings import Settings

SINK_KIND = "sink"
ROUTE_KIND = "route"
SINK_SECRETS = ("url",)


class LiveConfig:
    def __init__(self, settings: Settings, conn: redis.Redis) -> None:
        self.base = settings
        self.store = ConfigStore(conn, SecretBox.for_settings(settings))
        self._settings = Reloading(self.store, self._merged)

    def settings(self) -> Settings:
        return self._settings.get()

    def sinks(self) -> dict[str, tuple[str, str]]:
        """Every named sink: name → (where it comes from, its URL)."""
        named = {name: ("settings", url) for name, url in self.base.sinks.items()}
        for name, record in self._stored(SINK_KIND, SINK_SECRETS).items():
            if record.get("removed"):
                named.pop(name, None)
            else:
                named[name] = ("admin", record["url"])
        return named

    def routes(self) -> dict[str, tuple[str, list[str]]]:
        """Every route: key → (where it comes from, its sink names)."""
        keyed = {key: ("settings", list(sinks)) for key, sinks in self.base.routes.items()}
        for key, record in self._stored(ROUTE_KIND).items():
            if record.get("removed"):
                keyed.pop(key, None)
            else:
                keyed[key] = ("admin", list(record["sinks"]))
        return keyed

    def tasks(self) -> dict[str, str]:
        """The OCR task per route key (vllm engine): OCRHUB_TASKS under the tasks of stored routes."""
        tasks = dict(self.base.tasks)
        for key, record in self._stored(ROUTE_KIND).items():
            if record.get("removed"):
                tasks.pop(key, None)
            elif record.get("task"):
                tasks[key] = record["task"]
        return tasks

    def _merged(self) -> Settings:
        sinks = {name: url for name, (_source, url) in self.sinks().items()}
        routes = {key: sinks_ for key, (_source, sinks_) in self.routes().items()}
        return self.base.model_copy(update={"sinks": sinks, "routes": routes, "tasks": self.tasks()})

    def _stored(self, kind: str, secrets: tuple[str, ...] = ()) -> dict[str, dict]:
        try:
            return self.store.all(kind, secrets)
        except SecretBoxError:
            import logging

            logging.getLogger(__name__).error("the %ss saved on the admin page are not used: their secrets do not open with this hub's key", kind)
            return {}


_live: dict[tuple[int, int], LiveConfig] = {}


def live_config(settings: Settings, conn: redis.Redis) -> LiveConfig:
    key = (id(settings), id(conn))
    found = _live.get(key)
    if found is None or found.base is not settings:  # an id reused by a newer object
        found = _live[key] = LiveConfig(settings, conn)
    return found


def live_settings(settings: Settings, conn: redis.Redis) -> Settings:
    """`settings` with the sinks and routes in force now."""
    return live_config(settings, conn).settings()
