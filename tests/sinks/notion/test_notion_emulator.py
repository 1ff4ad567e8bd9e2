"""The emulator refuses what Notion refuses, so a sink that passes against it keeps to Notion's rules."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from notion_client import APIResponseError, Client

from tests.emulators.notion import NotionEmulator

TEXT = {"type": "text", "text": {"content": "x"}}


@pytest.fixture
def notion() -> Iterator[NotionEmulator]:
    with NotionEmulator() as emulator:
        yield emulator


def client(notion: NotionEmulator, token: str | None = None) -> Client:
    return Client(auth=token or notion.token, base_url=notion.url, retry=False)


def refused(call, status: int, code: str, message: str = "") -> None:
    with pytest.raises(APIResponseError) as caught:
        call()
    assert (caught.value.status, caught.value.code) == (status, code)
    assert message in str(caught.value)


def test_auth_and_version(notion: NotionEmulator) -> None:
    refused(lambda: client(notion, "ntn_wrong").users.me(), 401, "unauthorized")
    answer = httpx.get(f"{notion.url}/v1/users/me", headers={"Authorization": f"Bearer {notion.token}"})
    assert answer.status_code == 400 and answer.json()["code"] == "missing_version"
    assert client(notion).users.me()["bot"]["workspace_limits"]["max_file_upload_size_in_bytes"] == 5 * 1024 * 1024


def test_sharing(notion: NotionEmulator) -> None:
    hidden, hidden_source = notion.workspace.add_database(shared=False)
    refused(lambda: client(notion).databases.retrieve(hidden), 404, "object_not_found", "shared with your integration")
    refused(lambda: client(notion).data_sources.query(hidden_source), 404, "object_not_found")


def test_pages_keep_to_the_limits(notion: NotionEmulator) -> None:
    _, source = notion.workspace.add_database()
    notion_client = client(notion)
    create = lambda properties, children=(): notion_client.pages.create(  # noqa: E731
        parent={"type": "data_source_id", "data_source_id": source}, properties=properties, children=list(children)
    )
    refused(lambda: create({"Colour": {"rich_text": [TEXT]}}), 400, "validation_error", "Colour is not a property that exists")
    refused(lambda: create({"Time": {"rich_text": [TEXT]}}), 400, "validation_error", "Time is expected to be date")
    refused(lambda: create({"Text": {"rich_text": [{"type": "text", "text": {"content": "😀" * 1001}}]}}), 400, "validation_error", "should be ≤ `2000`, instead was `2002`")
    refused(lambda: create({"Text": {"rich_text": [TEXT] * 101}}), 400, "validation_error", "should be ≤ `100`")
    paragraph = {"type": "paragraph", "paragraph": {"rich_text": [TEXT]}}
    refused(lambda: create({}, [paragraph] * 101), 400, "validation_error", "body.children.length should be ≤ `100`")
    refused(lambda: notion_client.pages.create(parent={"database_id": source}, properties={}), 400, "validation_error", "data_source_id")
    page = create({"Name": {"title": [TEXT]}}, [paragraph] * 100)
    refused(lambda: notion_client.blocks.children.append(page["id"], children=[paragraph] * 101), 400, "validation_error")
    notion_client.blocks.children.append(page["id"], children=[paragraph] * 100)
    assert len(notion.workspace.blocks(page["id"])) == 200
    assert notion.count("pages.create", 400) == 6


def test_uploads(notion: NotionEmulator) -> None:
    notion.workspace.max_upload_bytes = 1000
    notion_client = client(notion)
    upload = notion_client.file_uploads.create(mode="single_part", filename="a.png", content_type="image/png")
    refused(lambda: notion_client.file_uploads.send(upload["id"], file=("a.png", b"x" * 1001, "image/png")), 400, "validation_error", "over the workspace's limit")
    sent = notion_client.file_uploads.send(upload["id"], file=("a.png", b"x" * 1000, "image/png"))
    assert sent["status"] == "uploaded" and sent["content_length"] == 1000
    refused(lambda: notion_client.file_uploads.send(upload["id"], file=("a.png", b"x", "image/png")), 400, "validation_error", "not pending")


def test_query_filters_on_rich_text_equals(notion: NotionEmulator) -> None:
    _, source = notion.workspace.add_database()
    notion_client = client(notion)
    for key in ("a", "b", "ab"):
        notion_client.pages.create(parent={"data_source_id": source}, properties={"Message ID": {"rich_text": [{"text": {"content": key}}]}})
    found = notion_client.data_sources.query(source, filter={"property": "Message ID", "rich_text": {"equals": "a"}})
    assert [notion.workspace.cell(p, "Message ID") for p in found["results"]] == ["a"]
    refused(lambda: notion_client.data_sources.query(source, filter={"property": "Nope", "rich_text": {"equals": "a"}}), 400, "validation_error", "Could not find property")


def test_fault_injection(notion: NotionEmulator) -> None:
    _, source = notion.workspace.add_database()
    notion_client = client(notion)
    notion.fail("pages.create", 500, times=2, commit=True)
    notion.fail("users.me", 429, retry_after=3)
    for _ in range(2):
        refused(lambda: notion_client.pages.create(parent={"data_source_id": source}, properties={}), 500, "internal_server_error")
    assert len(notion.workspace.rows(source)) == 2, "the failed creates were done before failing"
    with pytest.raises(APIResponseError) as caught:
        notion_client.users.me()
    assert caught.value.headers["retry-after"] == "3"
    assert notion.injected == 3
