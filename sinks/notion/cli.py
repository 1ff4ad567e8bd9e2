"""`ocrhub notion …`: set up a database for the Notion sink, and check one before the hub starts."""

from __future__ import annotations

from urllib.parse import urlsplit

import click
import redis

from ocr_core.limits.budget import Budget, LocalBudget
from ocrhub import runtime
from ocrhub.settings import Settings, SettingsError, get_settings
from sinks.base import SinkConfigError, SinkError, sink_url_for
from sinks.notion import NotionConfig, parse_url
from sinks.notion.api import NotionApi, make_client, shared_budget
from sinks.notion.ids import compact, parse_object_id
from sinks.notion.schema import Schema, add_missing, check, create_database, find_data_source, label

SINK_HELP = "A sink name from OCRHUB_SINKS (or a notion:// URL) naming the database; default: the OCRHUB_NOTION_* settings."


@click.group("notion")
def notion() -> None:
    """Set up and check the Notion sink (docs/notion.md)."""


@notion.command()
@click.option("--sink", "sink", default="notion://", show_default=True, help=SINK_HELP)
@click.option("--parent-page", default="", help="Create a new database under this page (link or id) instead of changing an existing one.")
@click.option("--title", default="OCR inbox", show_default=True, help="Title of a database created with --parent-page.")
def init(sink: str, parent_page: str, title: str) -> None:
    """Add the properties the sink writes to the database, or create a database under a page.

    Existing properties are never retyped: a column of the wrong type is reported instead.
    """
    settings, config = _load(sink, database_required=not parent_page)
    api = _api(settings, config)
    try:
        if parent_page:
            schema = create_database(api, parse_object_id(parent_page, "page"), title, config.names)
            click.echo(f"created database {title!r} under the page, with {_columns(schema)}")
            click.echo(f"use it: OCRHUB_NOTION_DATABASE_ID={compact(schema.database_id)}  (or notion://<token>@{compact(schema.database_id)})")
            return
        database_id, source = find_data_source(api, config.database_id, config.data_source)
        schema, added = add_missing(api, database_id, source, config.names)
    except (SinkConfigError, SinkError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added {', '.join(added)}" if added else "nothing to add")
    click.echo(f"ready: data source {schema.title!r} has {_columns(schema)}")


@notion.command("check")
@click.option("--sink", "sink", default="notion://", show_default=True, help=SINK_HELP)
def check_command(sink: str) -> None:
    """Ask Notion whether the sink can write: token, sharing, every column. Exit 1 with the fix if not."""
    settings, config = _load(sink, database_required=True)
    api = _api(settings, config)
    try:
        me = api.read("users.me", api.client.users.me)
        database_id, source = find_data_source(api, config.database_id, config.data_source)
        schema = check(database_id, source, config.names)
    except (SinkConfigError, SinkError) as exc:
        raise click.ClickException(str(exc)) from None
    limit = ((me.get("bot") or {}).get("workspace_limits") or {}).get("max_file_upload_size_in_bytes")
    click.echo(f"ok: {me.get('name') or 'the integration'} can write to data source {schema.title!r} ({compact(schema.data_source_id)})")
    click.echo(f"columns: {_columns(schema)}")
    if limit:
        click.echo(f"images over {limit} bytes are downscaled before upload")


def _load(sink: str, *, database_required: bool) -> tuple[Settings, NotionConfig]:
    try:
        settings = get_settings()
        url = urlsplit(sink_url_for(sink, settings))
        if url.scheme != "notion":
            raise SinkConfigError(f"sink {sink!r} is {url.scheme}://, not notion://")
        return settings, parse_url(url, settings, database_required=database_required)
    except (SettingsError, SinkConfigError) as exc:
        raise click.ClickException(str(exc)) from None


def _api(settings: Settings, config: NotionConfig) -> NotionApi:
    return NotionApi(make_client(config.token, config.base_url, config.timeout), _budget(settings, config))


def _budget(settings: Settings, config: NotionConfig) -> Budget:
    """The hub's shared budget when a hub is reachable, so setup never starves running workers."""
    try:
        conn = runtime.connect(settings)
        conn.ping()
    except (RuntimeError, redis.RedisError):
        return LocalBudget(config.rate)
    return shared_budget(conn, config.token, config.rate)


def _columns(schema: Schema) -> str:
    return ", ".join(f"{name} ({label(kind)})" for name, kind in schema.columns.values())
