"""`ocrhub notion init` and `ocrhub notion check` against the emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from ocrhub.settings import Settings
from sinks.notion.cli import notion as notion_group
from tests.emulators.notion import NotionEmulator
from tests.emulators.notion_workspace import FULL_SCHEMA


@pytest.fixture
def notion(settings: Settings, set_env) -> Iterator[NotionEmulator]:
    with NotionEmulator() as emulator:
        set_env(notion_token=emulator.token, notion_base_url=emulator.url)
        yield emulator


def run(*args: str) -> tuple[int, str]:
    outcome = CliRunner().invoke(notion_group, list(args), catch_exceptions=False)
    return outcome.exit_code, outcome.output


def types(notion: NotionEmulator, source_id: str) -> dict[str, str]:
    return {name: p["type"] for name, p in notion.workspace.data_sources[source_id]["properties"].items()}


def test_init_adds_what_the_sink_needs_and_keeps_what_is_there(notion: NotionEmulator, set_env) -> None:
    database_id, source_id = notion.workspace.add_database(properties={"Title": "title", "Tags": "multi_select", "Text": "rich_text"})
    set_env(notion_database_id=f"https://www.notion.so/acme/Inbox-{database_id.replace('-', '')}?v=1")
    code, output = run("init")
    assert code == 0, output
    assert "added Chat (Text), Sender (Text), Time (Date), Image (Files & media), Source (URL), Engine (Select), Message ID (Text)" in output
    assert types(notion, source_id) == {**{k: v for k, v in FULL_SCHEMA.items() if k != "Name"}, "Title": "title", "Tags": "multi_select"}
    assert run("init") == (0, "nothing to add\n" + output.splitlines()[1] + "\n")
    code, output = run("check")
    assert code == 0 and "can write to data source 'OCR inbox'" in output and "Message ID (Text)" in output


def test_init_with_the_teams_column_names(notion: NotionEmulator, set_env) -> None:
    database_id, source_id = notion.workspace.add_database(properties={"标题": "title"})
    names = {"text": "内容", "chat": "群", "sender": "发送者", "time": "时间", "image": "图片", "source": "", "engine": "", "message_id": "消息ID"}
    set_env(notion_database_id=database_id, notion_properties=json.dumps(names, ensure_ascii=False))
    code, output = run("init")
    assert code == 0, output
    assert types(notion, source_id) == {"标题": "title", "内容": "rich_text", "群": "rich_text", "发送者": "rich_text", "时间": "date", "图片": "files", "消息ID": "rich_text"}


def test_init_never_retypes_a_column(notion: NotionEmulator, set_env) -> None:
    database_id, source_id = notion.workspace.add_database(properties={"Name": "title", "Time": "rich_text"})
    set_env(notion_database_id=database_id)
    code, output = run("init")
    assert code == 1
    assert "property 'Time' is a Text but column time needs Date" in output
    [problem] = [line for line in output.splitlines() if "'Time'" in line]
    assert "notion init" not in problem  # the command that never retypes is no fix for a type
    assert 'change its type in Notion (to Date), or write the column to another Date property: add "time": "<its name>" to OCRHUB_NOTION_PROPERTIES' in problem
    assert types(notion, source_id)["Time"] == "rich_text"


def test_init_creates_a_database_under_a_page(notion: NotionEmulator, set_env) -> None:
    page_id = notion.workspace.add_page("Team wiki")
    code, output = run("init", "--parent-page", f"https://www.notion.so/acme/Team-wiki-{page_id.replace('-', '')}", "--title", "识别结果")
    assert code == 0, output
    [database_id] = notion.workspace.databases
    assert f"OCRHUB_NOTION_DATABASE_ID={database_id.replace('-', '')}" in output
    assert notion.workspace.databases[database_id]["parent"] == {"type": "page_id", "page_id": page_id}
    set_env(notion_database_id=database_id)
    assert run("check")[0] == 0


def test_a_page_not_shared(notion: NotionEmulator) -> None:
    page_id = notion.workspace.add_page(shared=False)
    code, output = run("init", "--parent-page", page_id)
    assert code == 1 and "share the page with the integration" in output


def test_check_names_the_fix(notion: NotionEmulator, set_env) -> None:
    database_id, _ = notion.workspace.add_database(shared=False)
    set_env(notion_database_id=database_id)
    code, output = run("check")
    assert code == 1 and "share it with the integration" in output and notion.token not in output


def test_a_named_sink(notion: NotionEmulator, set_env) -> None:
    database_id, source_id = notion.workspace.add_database(properties={"Name": "title"})
    set_env(sinks=json.dumps({"kb": f"notion://{notion.token}@{database_id}?engine="}))
    assert run("init", "--sink", "kb")[0] == 0
    assert "Engine" not in types(notion, source_id) and "Message ID" in types(notion, source_id)
    code, output = run("init", "--sink", "local")
    assert code == 1 and "not notion://" in output


def test_init_without_a_running_hub(notion: NotionEmulator, set_env) -> None:
    database_id, source_id = notion.workspace.add_database(properties={"Name": "title"})
    set_env(notion_database_id=database_id, redis_url="redis://127.0.0.1:1/0")
    code, output = run("init")
    assert code == 0, output
    assert types(notion, source_id) == FULL_SCHEMA
