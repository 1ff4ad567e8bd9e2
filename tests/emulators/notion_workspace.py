"""The state behind the Notion emulator: databases, data sources, rows, blocks and file uploads.

It enforces the documented behaviour the sink relies on (Notion-Version 2025-09-03): properties
and rows live in data sources; unknown or mistyped property values are a 400 validation_error;
text objects hold ≤ 2000 UTF-16 units, arrays ≤ 100 items, an append ≤ 100 blocks; objects not
shared with the integration are a 404 object_not_found; uploads over the workspace limit fail.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any

from tests.emulators import notion_shapes as shapes
from tests.emulators.notion_shapes import TEXT_BLOCKS, NotionFailure, invalid, now_iso

FULL_SCHEMA = {
    "Name": "title", "Text": "rich_text", "Chat": "rich_text", "Sender": "rich_text", "Time": "date",
    "Image": "files", "Source": "url", "Engine": "select", "Message ID": "rich_text",
}


def not_found(kind: str, object_id: str) -> NotionFailure:
    return NotionFailure(
        404, "object_not_found",
        f"Could not find {kind} with ID: {object_id}. Make sure the relevant pages and databases are shared with your integration.",
    )


def normal_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw.replace("-", "")))
    except ValueError:
        raise invalid(f"path failed validation: {raw!r} should be a valid uuid") from None


class Workspace:
    def __init__(self, max_upload_bytes: int) -> None:
        self.lock = threading.RLock()
        self.max_upload_bytes = max_upload_bytes
        self.databases: dict[str, dict[str, Any]] = {}
        self.data_sources: dict[str, dict[str, Any]] = {}
        self.pages: dict[str, dict[str, Any]] = {}
        self.children: dict[str, list[dict[str, Any]]] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.shared: set[str] = set()
        self._order = itertools.count()

    # Arrange and inspect, for tests.

    def add_database(self, title: str = "OCR inbox", properties: dict[str, str] | None = None, *, shared: bool = True, sources: int = 1) -> tuple[str, str]:
        """(database id, first data source id); `properties` maps name → type (default: the sink's full schema)."""
        with self.lock:
            database_id = str(uuid.uuid4())
            self.databases[database_id] = {"id": database_id, "title": title, "parent": {"type": "workspace", "workspace": True}, "sources": []}
            for n in range(sources):
                self._new_source(database_id, title if n == 0 else f"{title} {n + 1}", properties or FULL_SCHEMA)
            if shared:
                self.shared.add(database_id)
            return database_id, self.databases[database_id]["sources"][0]

    def add_page(self, title: str = "Team wiki", *, shared: bool = True) -> str:
        with self.lock:
            page_id = str(uuid.uuid4())
            self.pages[page_id] = {"id": page_id, "parent": {"type": "workspace", "workspace": True}, "properties": {}, "title": title, "order": next(self._order), "in_trash": False}
            self.children[page_id] = []
            if shared:
                self.shared.add(page_id)
            return page_id

    def rows(self, data_source_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return sorted(
                (p for p in self.pages.values() if p["parent"].get("data_source_id") == data_source_id and not p["in_trash"]),
                key=lambda p: p["order"],
            )

    def cell(self, page: dict[str, Any], name: str) -> Any:
        """A property's value as plain Python: text for title/rich_text, the raw value otherwise."""
        value = page["properties"].get(name)
        if value is None:
            return None
        kind = value["type"]
        if kind in ("title", "rich_text"):
            return "".join(part["plain_text"] for part in value[kind])
        return value[kind]

    def blocks(self, page_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.children.get(page_id, []))

    def body_text(self, page_id: str) -> str:
        lines = []
        for block in self.blocks(page_id):
            if block["type"] in TEXT_BLOCKS:
                lines.append("".join(part["plain_text"] for part in block[block["type"]]["rich_text"]))
        return "\n".join(lines)

    # The API, one method per endpoint; each returns the JSON body or raises NotionFailure.

    def users_me(self) -> dict[str, Any]:
        return {
            "object": "user", "id": "b0000000-0000-4000-8000-000000000001", "type": "bot", "name": "ocrhub (emulated)",
            "bot": {"owner": {"type": "workspace", "workspace": True}, "workspace_name": "Emulated workspace",
                    "workspace_limits": {"max_file_upload_size_in_bytes": self.max_upload_bytes}},
        }

    def databases_retrieve(self, raw_id: str) -> dict[str, Any]:
        database_id = normal_id(raw_id)
        with self.lock:
            if database_id not in self.databases or database_id not in self.shared:
                raise not_found("database", database_id)
            return self._database_json(database_id)

    def databases_create(self, body: dict[str, Any]) -> dict[str, Any]:
        parent = body.get("parent") or {}
        if parent.get("type", "page_id") != "page_id" or "page_id" not in parent:
            raise invalid("body.parent.page_id should be defined, instead was `undefined`.")
        page_id = normal_id(parent["page_id"])
        properties = (body.get("initial_data_source") or {}).get("properties") or {}
        with self.lock:
            if page_id not in self.pages or page_id not in self.shared:
                raise not_found("page", page_id)
            definitions = {name: shapes.definition(name, spec) for name, spec in properties.items()}
            if sum(1 for d in definitions.values() if d["type"] == "title") != 1:
                raise invalid("A data source must have exactly one title property.")
            database_id = str(uuid.uuid4())
            title = "".join(shapes.text(body.get("title") or [], "body.title"))
            self.databases[database_id] = {"id": database_id, "title": title, "parent": {"type": "page_id", "page_id": page_id}, "sources": []}
            self._new_source(database_id, title, {n: d["type"] for n, d in definitions.items()})
            # A database made by the integration is visible to it.
            self.shared.add(database_id)
            return self._database_json(database_id)

    def data_sources_retrieve(self, raw_id: str) -> dict[str, Any]:
        with self.lock:
            return self._source_json(self._visible_source(normal_id(raw_id)))

    def data_sources_update(self, raw_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            source = self._visible_source(normal_id(raw_id))
            properties = dict(source["properties"])
            for name, spec in (body.get("properties") or {}).items():
                current = properties.get(name) or next((p for p in properties.values() if p["id"] == name), None)
                if spec is None:
                    if current is None or current["type"] == "title":
                        raise invalid(f"Cannot delete property {name!r}.")
                    del properties[current["name"]]
                    continue
                if set(spec) == {"name"} and current is not None:
                    del properties[current["name"]]
                    properties[spec["name"]] = {**current, "name": spec["name"]}
                    continue
                definition = shapes.definition(spec.get("name", name), spec)
                if definition["type"] == "title" and (current is None or current["type"] != "title"):
                    raise invalid("Cannot create a second title property; a data source has exactly one.")
                if current is not None:
                    definition["id"] = current["id"]
                    del properties[current["name"]]
                properties[definition["name"]] = definition
            source["properties"] = properties
            return self._source_json(source)

    def data_sources_query(self, raw_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            source = self._visible_source(normal_id(raw_id))
            rows = self.rows(source["id"])
            if body.get("filter"):
                rows = [r for r in rows if self._matches(source, r, body["filter"])]
            for sort in body.get("sorts") or []:
                if sort.get("timestamp") != "created_time":
                    raise invalid("The emulator sorts by timestamp created_time only.")
                rows.sort(key=lambda p: p["order"], reverse=sort.get("direction") == "descending")
            return self._listing(rows, body, self._page_json)

    def pages_create(self, body: dict[str, Any]) -> dict[str, Any]:
        parent = body.get("parent") or {}
        if "data_source_id" not in parent:
            raise invalid("body.parent.data_source_id should be defined: with Notion-Version 2025-09-03 rows go to a data source.")
        children = body.get("children") or []
        with self.lock:
            source = self._visible_source(normal_id(parent["data_source_id"]))
            values = {}
            for name, raw in (body.get("properties") or {}).items():
                prop = source["properties"].get(name)
                if prop is None:
                    raise invalid(f"{name} is not a property that exists.")
                values[name] = shapes.value(prop, raw, f"body.properties.{name}", self._attachable)
            blocks = shapes.blocks(children, "body.children", self._attachable)
            page_id = str(uuid.uuid4())
            self.pages[page_id] = {
                "id": page_id, "parent": {"type": "data_source_id", "data_source_id": source["id"], "database_id": source["database_id"]},
                "properties": values, "created_time": now_iso(), "order": next(self._order), "in_trash": False,
            }
            self.children[page_id] = blocks
            return self._page_json(self.pages[page_id])

    def pages_retrieve(self, raw_id: str) -> dict[str, Any]:
        with self.lock:
            return self._page_json(self._visible_page(normal_id(raw_id)))

    def blocks_append(self, raw_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            page = self._visible_page(normal_id(raw_id))
            blocks = shapes.blocks(body.get("children") or [], "body.children", self._attachable)
            self.children[page["id"]].extend(blocks)
            return {"object": "list", "results": blocks, "next_cursor": None, "has_more": False, "type": "block", "block": {}}

    def blocks_list(self, raw_id: str, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            page = self._visible_page(normal_id(raw_id))
            return self._listing(self.children[page["id"]], query, lambda b: b)

    def uploads_create(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("mode", "single_part") != "single_part":
            raise invalid("The emulator supports mode single_part only.")
        upload_id = str(uuid.uuid4())
        with self.lock:
            self.uploads[upload_id] = {
                "object": "file_upload", "id": upload_id, "status": "pending", "filename": body.get("filename"),
                "content_type": body.get("content_type"), "content_length": None, "created_time": now_iso(),
                "expiry_time": now_iso(3600), "data": b"", "attached": 0,
            }
            return self._upload_json(upload_id)

    def uploads_send(self, raw_id: str, parts: dict[str, tuple[str, str, bytes]]) -> dict[str, Any]:
        upload_id = normal_id(raw_id)
        with self.lock:
            upload = self.uploads.get(upload_id)
            if upload is None:
                raise not_found("file upload", upload_id)
            if upload["status"] != "pending":
                raise invalid(f"File upload {upload_id} is {upload['status']}, not pending.")
            if "file" not in parts:
                raise invalid("body.file should be defined: send the contents as multipart/form-data under the key `file`.")
            filename, content_type, data = parts["file"]
            if len(data) > self.max_upload_bytes:
                raise invalid(f"The file is {len(data)} bytes, over the workspace's limit of {self.max_upload_bytes} bytes.")
            if upload["content_type"] and content_type != upload["content_type"]:
                raise invalid(f"Content type {content_type} does not match the upload's {upload['content_type']}.")
            upload.update(status="uploaded", data=data, content_length=len(data), filename=upload["filename"] or filename, content_type=upload["content_type"] or content_type)
            return self._upload_json(upload_id)

    def uploads_retrieve(self, raw_id: str) -> dict[str, Any]:
        upload_id = normal_id(raw_id)
        with self.lock:
            if upload_id not in self.uploads:
                raise not_found("file upload", upload_id)
            return self._upload_json(upload_id)

    # Visibility and JSON shapes.

    def _new_source(self, database_id: str, name: str, properties: dict[str, str]) -> None:
        source_id = str(uuid.uuid4())
        definitions = {n: shapes.definition(n, {kind: {}}) for n, kind in properties.items()}
        self.data_sources[source_id] = {"id": source_id, "database_id": database_id, "name": name, "properties": definitions}
        self.databases[database_id]["sources"].append(source_id)

    def _visible_source(self, source_id: str) -> dict[str, Any]:
        source = self.data_sources.get(source_id)
        if source is None or source["database_id"] not in self.shared:
            raise not_found("data source", source_id)
        return source

    def _visible_page(self, page_id: str) -> dict[str, Any]:
        page = self.pages.get(page_id)
        visible = page is not None and (page_id in self.shared or page["parent"].get("database_id") in self.shared)
        if not visible:
            raise not_found("block", page_id)
        return page

    def _attachable(self, raw_id: str, path: str) -> dict[str, Any]:
        upload = self.uploads.get(normal_id(raw_id)) if raw_id else None
        if upload is None:
            raise invalid(f"{path}: file upload {raw_id!r} does not exist.")
        if upload["status"] != "uploaded":
            raise invalid(f"{path}: file upload {raw_id} is {upload['status']}; send its contents before attaching it.")
        upload["attached"] += 1
        return upload

    def _matches(self, source: dict[str, Any], page: dict[str, Any], flt: dict[str, Any]) -> bool:
        if "and" in flt:
            return all(self._matches(source, page, f) for f in flt["and"])
        if "or" in flt:
            return any(self._matches(source, page, f) for f in flt["or"])
        name = flt.get("property")
        prop = source["properties"].get(name)
        if prop is None:
            raise invalid(f"Could not find property with name or id: {name}")
        if "select" in flt and prop["type"] == "select":
            chosen = (self.cell(page, name) or {}).get("name", "")
            if "equals" in flt["select"]:
                return chosen == flt["select"]["equals"]
            raise invalid(f"Unsupported select filter condition {sorted(flt['select'])}.")
        kind = next((k for k in ("rich_text", "title") if k in flt), None)
        if kind is None or prop["type"] not in ("rich_text", "title"):
            raise invalid(f"The emulator filters text properties with a rich_text or title condition, and selects with select, only (got {sorted(flt)}).")
        condition = flt[kind]
        text = self.cell(page, name) or ""
        if "equals" in condition:
            return text == condition["equals"]
        if "contains" in condition:
            # Notion matches text case-insensitively.
            return condition["contains"].casefold() in text.casefold()
        if "is_empty" in condition:
            return not text
        raise invalid(f"Unsupported text filter condition {sorted(condition)}.")

    def _listing(self, items: list[Any], params: dict[str, Any], shape: Any) -> dict[str, Any]:
        try:
            size = int(params.get("page_size") or 100)
            start = int(params.get("start_cursor") or 0)
        except ValueError:
            raise invalid("page_size and start_cursor must be numbers in the emulator.") from None
        if not 1 <= size <= 100:
            raise invalid(f"page_size should be ≤ `100`, instead was `{size}`.")
        page = items[start:start + size]
        more = start + size < len(items)
        return {"object": "list", "results": [shape(i) for i in page], "has_more": more, "next_cursor": str(start + size) if more else None}

    def _database_json(self, database_id: str) -> dict[str, Any]:
        database = self.databases[database_id]
        return {
            "object": "database", "id": database_id, "parent": database["parent"],
            "title": [{"type": "text", "text": {"content": database["title"]}, "plain_text": database["title"]}],
            "data_sources": [{"id": s, "name": self.data_sources[s]["name"]} for s in database["sources"]],
            "url": f"https://www.notion.so/{database_id.replace('-', '')}", "in_trash": False,
        }

    def _source_json(self, source: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "data_source", "id": source["id"],
            "parent": {"type": "database_id", "database_id": source["database_id"]},
            "title": [{"type": "text", "text": {"content": source["name"]}, "plain_text": source["name"]}],
            "properties": {name: dict(p) for name, p in source["properties"].items()},
        }

    def _page_json(self, page: dict[str, Any]) -> dict[str, Any]:
        return {
            "object": "page", "id": page["id"], "created_time": page.get("created_time"), "parent": page["parent"],
            "in_trash": page["in_trash"], "archived": page["in_trash"], "properties": page["properties"],
            "url": f"https://www.notion.so/{page['id'].replace('-', '')}",
        }

    def _upload_json(self, upload_id: str) -> dict[str, Any]:
        upload = self.uploads[upload_id]
        return {k: v for k, v in upload.items() if k not in ("data", "attached")} | {"upload_url": f"/v1/file_uploads/{upload_id}/send"}
