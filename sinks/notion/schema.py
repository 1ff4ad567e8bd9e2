"""The columns the Notion sink writes, how a database's data source is found, checked, and set up.

Notion-Version 2025-09-03: a database holds one or more data sources; the properties (columns)
and the rows belong to a data source, so everything here ends at one data source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sinks.base import SinkConfigError
from sinks.notion.api import NotionApi, NotionNotFound
from sinks.notion.ids import compact


@dataclass(frozen=True)
class Column:
    key: str
    default: str
    types: tuple[str, ...]  # what the sink can write into; `ocrhub notion init` creates the first
    required: bool = False


COLUMNS: tuple[Column, ...] = (
    # The default name "" means "whatever the data source's one title property is called".
    Column("name", "", ("title",), required=True),
    Column("text", "Text", ("rich_text",)),
    Column("chat", "Chat", ("rich_text", "select")),
    Column("sender", "Sender", ("rich_text", "select")),
    Column("time", "Time", ("date",)),
    Column("image", "Image", ("files",)),
    Column("source", "Source", ("url",)),
    Column("engine", "Engine", ("select", "rich_text")),
    Column("message_id", "Message ID", ("rich_text",), required=True),
)
BY_KEY = {c.key: c for c in COLUMNS}
DEFAULT_TITLE = "Name"

LABELS = {
    "title": "Title", "rich_text": "Text", "date": "Date", "files": "Files & media", "url": "URL",
    "select": "Select", "multi_select": "Multi-select", "number": "Number", "checkbox": "Checkbox",
    "people": "Person", "relation": "Relation", "formula": "Formula", "rollup": "Rollup",
}


def label(notion_type: str) -> str:
    return LABELS.get(notion_type, notion_type)


def column_names(overrides: Mapping[str, str]) -> dict[str, str]:
    """Column key → property name as configured; optional columns set to "" are not written."""
    unknown = sorted(set(overrides) - set(BY_KEY))
    if unknown:
        raise SinkConfigError(f"unknown Notion column key(s) {unknown}: use {', '.join(BY_KEY)}")
    names: dict[str, str] = {}
    for column in COLUMNS:
        name = overrides.get(column.key, column.default).strip()
        if not name and column.required and column.key != "name":
            raise SinkConfigError(f"the Notion column {column.key!r} cannot be left out: it is how a retry finds the row it already wrote")
        if name or column.key == "name":
            names[column.key] = name
    seen: dict[str, str] = {}
    for key, name in names.items():
        if name and name in seen:
            raise SinkConfigError(f"Notion columns {seen[name]!r} and {key!r} both map to property {name!r}; give each its own")
        seen[name] = key
    return names


@dataclass(frozen=True)
class Schema:
    database_id: str
    data_source_id: str
    title: str
    columns: dict[str, tuple[str, str]]  # key → (property name, Notion type)

    def name(self, key: str) -> str:
        return self.columns[key][0]

    def kind(self, key: str) -> str:
        return self.columns[key][1]


def find_data_source(api: NotionApi, object_id: str, choose: str = "") -> tuple[str, dict[str, Any]]:
    """(database id, data source object) for a database id, or for a data source id pasted instead."""
    client = api.client
    try:
        database = api.read("databases.retrieve", client.databases.retrieve, object_id)
    except NotionNotFound as not_a_database:
        try:
            source = api.read("data_sources.retrieve", client.data_sources.retrieve, object_id)
        except NotionNotFound:
            raise NotionNotFound(
                f"Notion cannot see database {compact(object_id)} ({not_a_database}): share it with the integration "
                "(open the database as a full page, ••• → Connections → add your integration), and check the id"
            ) from None
        return source.get("parent", {}).get("database_id", object_id), source
    sources = database.get("data_sources") or []
    title = plain(database.get("title"))
    if not sources:
        raise SinkConfigError(f"Notion database {title!r} ({compact(object_id)}) has no data source the integration can see")
    if choose:
        wanted = [s for s in sources if choose in (s.get("name"), s.get("id"), compact(s.get("id", "")))]
        if not wanted:
            raise SinkConfigError(f"database {title!r} has no data source {choose!r}; it has {_names(sources)}")
        picked = wanted[0]
    elif len(sources) == 1:
        picked = sources[0]
    else:
        raise SinkConfigError(
            f"database {title!r} has {len(sources)} data sources {_names(sources)}: choose one with the sink URL option data_source=<name or id>"
        )
    source = api.read("data_sources.retrieve", client.data_sources.retrieve, picked["id"])
    return database["id"], source


def check(database_id: str, source: dict[str, Any], names: Mapping[str, str]) -> Schema:
    """The resolved columns, or one SinkConfigError naming every column that does not fit."""
    properties: dict[str, dict[str, Any]] = source.get("properties", {})
    title = plain(source.get("title")) or "untitled"
    columns: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    for key, name in names.items():
        column = BY_KEY[key]
        if key == "name" and not name:
            name = next((n for n, p in properties.items() if p.get("type") == "title"), "")
        prop = properties.get(name)
        wanted = " or ".join(label(t) for t in column.types)
        if prop is None:
            problems.append(
                f"property {name!r} ({wanted}, column {key}) is missing: add it with `ocrhub notion init` (or in Notion), "
                f"or {_remap(column)}"
            )
        elif prop.get("type") not in column.types:
            # Not `ocrhub notion init`: it never retypes a property, which may hold a team's data.
            problems.append(
                f"property {name!r} is a {label(prop.get('type', '?'))} but column {key} needs {wanted}: "
                f"change its type in Notion (to {wanted}), or {_remap(column)}"
            )
        else:
            columns[key] = (name, prop["type"])
    if problems:
        raise SinkConfigError(
            f"Notion data source {title!r} ({compact(source.get('id', ''))}) does not fit the sink:\n  - " + "\n  - ".join(problems)
        )
    return Schema(database_id, source["id"], title, columns)


def add_missing(api: NotionApi, database_id: str, source: dict[str, Any], names: Mapping[str, str]) -> tuple[Schema, list[str]]:
    """Add the columns the data source lacks; never retype a column that already holds a team's data."""
    properties: dict[str, dict[str, Any]] = source.get("properties", {})
    updates: dict[str, Any] = {}
    added: list[str] = []
    for key, name in names.items():
        column = BY_KEY[key]
        if column.types[0] == "title" or name in properties:
            continue
        updates[name] = {column.types[0]: {}}
        added.append(f"{name} ({label(column.types[0])})")
    if updates:
        source = api.write("data_sources.update", api.client.data_sources.update, source["id"], properties=updates)
    return check(database_id, source, names), added


def create_database(api: NotionApi, parent_page_id: str, title: str, names: Mapping[str, str]) -> Schema:
    properties: dict[str, Any] = {}
    for key, name in names.items():
        column = BY_KEY[key]
        properties[name or DEFAULT_TITLE] = {column.types[0]: {}}
    try:
        database = api.write(
            "databases.create",
            api.client.databases.create,
            parent={"type": "page_id", "page_id": parent_page_id},
            title=[{"type": "text", "text": {"content": title}}],
            initial_data_source={"properties": properties},
        )
    except NotionNotFound as exc:
        raise NotionNotFound(
            f"Notion cannot see page {compact(parent_page_id)} ({exc}): share the page with the integration "
            "(••• → Connections → add your integration)"
        ) from None
    database_id, source = find_data_source(api, database["id"])
    return check(database_id, source, names)


def _remap(column: Column) -> str:
    """How to point a column at another property instead (or leave an optional one out)."""
    wanted = " or ".join(label(t) for t in column.types)
    fix = f'write the column to another {wanted} property: add "{column.key}": "<its name>" to OCRHUB_NOTION_PROPERTIES (or the sink URL option {column.key}=…)'
    return fix if column.required else fix + f', or leave it out with "{column.key}": ""'


def plain(rich: list[dict[str, Any]] | None) -> str:
    return "".join(part.get("plain_text") or part.get("text", {}).get("content", "") for part in rich or [])


def _names(sources: list[dict[str, Any]]) -> str:
    return ", ".join(repr(s.get("name") or compact(s.get("id", ""))) for s in sources)
