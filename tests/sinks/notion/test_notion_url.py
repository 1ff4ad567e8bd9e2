"""Tables: database ids as people paste them, notion:// URLs, and what a printed URL shows."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import redis

from ocrhub.settings import Settings
from sinks.base import SinkConfigError, SinkContext, get_sink, sink_from_url
from sinks.notion import NotionSink, parse_url
from sinks.notion.ids import parse_object_id

ID = "1f2e3d4c5b6a49788796a5b4c3d2e1f0"
DASHED = "1f2e3d4c-5b6a-4978-8796-a5b4c3d2e1f0"
TOKEN = "ntn_4815162342abcdefSECRET"


@pytest.mark.parametrize(
    "pasted",
    [
        ID,
        DASHED,
        ID.upper(),
        f"  {ID}\n",
        f"https://www.notion.so/{ID}?v=0a1b2c3d4e5f40718293a4b5c6d7e8f9",
        f"https://www.notion.so/acme/{ID}?v=0a1b2c3d4e5f40718293a4b5c6d7e8f9&pvs=4",
        f"https://www.notion.so/acme/OCR-Inbox-{ID}",
        f"https://www.notion.so/acme/Cafe-Notes-{ID}?pvs=4",
        f"https://acme.notion.site/%E8%AF%86%E5%88%AB%E7%BB%93%E6%9E%9C-{ID}",
        f"https://www.notion.so/acme/识别结果-{ID}",
        f"www.notion.so/{ID}",
        f"notion.so/acme/Title-{ID}",
        f"collection://{DASHED}",
    ],
)
def test_database_id_in_every_pasted_form(pasted: str) -> None:
    assert parse_object_id(pasted) == DASHED


@pytest.mark.parametrize(
    "pasted",
    ["", "kb", ID[:-1], ID + "0", "https://www.notion.so/acme/Inbox", f"https://www.notion.so/acme/Inbox{ID}x", "not a url at all"],
)
def test_not_a_database_id(pasted: str) -> None:
    with pytest.raises(SinkConfigError, match="Copy link"):
        parse_object_id(pasted)


def configure(url: str, settings: Settings) -> NotionSink:
    return NotionSink.from_url(urlsplit(url), SinkContext(settings, redis.Redis()))


@pytest.mark.parametrize(
    ("url", "token", "database"),
    [
        (f"notion://{TOKEN}@{ID}", TOKEN, DASHED),
        (f"notion://{TOKEN}@{DASHED}", TOKEN, DASHED),
        (f"notion://{TOKEN}@www.notion.so/acme/Inbox-{ID}?v=0a1b2c3d4e5f40718293a4b5c6d7e8f9", TOKEN, DASHED),
        (f"notion://{TOKEN}@?database=https%3A%2F%2Fwww.notion.so%2F{ID}%3Fv%3D1", TOKEN, DASHED),
        ("notion://", "ntn_from_settings", "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9"),
        (f"notion://@{ID}", "ntn_from_settings", DASHED),
        (f"notion://{TOKEN}@", TOKEN, "0a1b2c3d-4e5f-4071-8293-a4b5c6d7e8f9"),
    ],
)
def test_url_and_settings(url: str, token: str, database: str, settings: Settings, set_env) -> None:
    settings = set_env(notion_token="ntn_from_settings", notion_database_id="https://www.notion.so/0a1b2c3d4e5f40718293a4b5c6d7e8f9?v=1")
    config = parse_url(urlsplit(url), settings)
    assert (config.token, config.database_id) == (token, database)


@pytest.mark.parametrize(
    ("url", "printed"),
    [
        (f"notion://{TOKEN}@{ID}", f"notion://****@{ID}"),
        (f"notion://{TOKEN}@{DASHED}?rate=5&timeout=20", f"notion://****@{ID}?rate=5&timeout=20"),
        (f"notion://{TOKEN}@www.notion.so/acme/Inbox-{ID}?v=abc", f"notion://****@{ID}"),
        (f"notion://{TOKEN}@{ID}?text=%E5%86%85%E5%AE%B9&engine=", f"notion://****@{ID}?text=%E5%86%85%E5%AE%B9&engine="),
        ("notion://", f"notion://****@{ID}"),
    ],
)
def test_printed_url_masks_the_token(url: str, printed: str, settings: Settings, set_env) -> None:
    settings = set_env(notion_token=TOKEN, notion_database_id=ID)
    sink = configure(url, settings)
    assert sink.url() == printed
    assert TOKEN not in sink.url()
    assert TOKEN in sink.url(privacy=False)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("notion://", "OCRHUB_NOTION_TOKEN"),
        (f"notion://{TOKEN}@", "OCRHUB_NOTION_DATABASE_ID"),
        (f"notion://{TOKEN}@kb", "is not a Notion database id"),
        (f"notion://{TOKEN}@{ID}?rat=3", r"unknown notion:// option\(s\) \['rat'\]"),
        (f"notion://{TOKEN}@{ID}?rate=0", "rate='0' must be a number from 0.01"),
        (f"notion://{TOKEN}@{ID}?timeout=soon", "timeout='soon'"),
        (f"notion://{TOKEN}@{ID}?message_id=", "cannot be left out"),
        (f"notion://{TOKEN}@{ID}?text=Chat", "both map to property 'Chat'"),
        (f"notion://{TOKEN}@{ID}?title={{first_line}}+{{author}}", r"unknown field\(s\) \['author'\]"),
        (f"notion://{TOKEN}@{ID}?title={{first_line", "malformed"),
    ],
)
def test_configuration_errors_say_what_to_fix(url: str, message: str, settings: Settings) -> None:
    with pytest.raises(SinkConfigError, match=message) as caught:
        configure(url, settings)
    assert TOKEN not in str(caught.value)


def test_property_names_from_settings_and_url(settings: Settings, set_env) -> None:
    settings = set_env(notion_properties='{"text": "内容", "sender": "发送者", "engine": ""}')
    config = parse_url(urlsplit(f"notion://{TOKEN}@{ID}?sender=%E4%BD%9C%E8%80%85"), settings)
    assert config.names["text"] == "内容"
    assert config.names["sender"] == "作者"
    assert "engine" not in config.names
    assert config.names["message_id"] == "Message ID"


def test_a_named_sink_in_settings_resolves_to_the_notion_sink(settings: Settings, set_env, conn: redis.Redis) -> None:
    settings = set_env(sinks=f'{{"kb": "notion://{TOKEN}@{ID}?rate=7"}}')
    sink = get_sink("kb", SinkContext(settings, conn))
    assert isinstance(sink, NotionSink)
    assert sink.url() == f"notion://****@{ID}?rate=7"
    assert isinstance(sink_from_url(f"notion://{TOKEN}@{ID}", SinkContext(settings, conn)), NotionSink)
