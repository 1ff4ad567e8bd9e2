"""What the Notion emulator accepts in a request body, and how it stores it: Notion's documented limits.

Rich text objects hold ≤ 2000 UTF-16 units (Notion counts like JavaScript), arrays ≤ 100 items,
an append ≤ 100 blocks; a property value must have its property's type.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

TEXT_LIMIT = 2000
ARRAY_LIMIT = 100
PROPERTY_TYPES = {
    "title", "rich_text", "number", "select", "multi_select", "status", "date", "people", "files", "checkbox",
    "url", "email", "phone_number", "formula", "relation", "rollup", "created_time", "created_by",
    "last_edited_time", "last_edited_by", "unique_id",
}
TEXT_BLOCKS = {"paragraph", "heading_1", "heading_2", "heading_3", "bulleted_list_item", "numbered_list_item", "quote"}

# Given a file upload id and where it was named, the upload, now counted as attached once more.
Attach = Callable[[str, str], dict[str, Any]]


class NotionFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def invalid(message: str) -> NotionFailure:
    return NotionFailure(400, "validation_error", message)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def now_iso(offset: float = 0.0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=offset)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def definition(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("type") or next((k for k in spec if k in PROPERTY_TYPES), None)
    if kind not in PROPERTY_TYPES:
        raise invalid(f"Property {name!r} has no valid type; use one of {sorted(PROPERTY_TYPES)}.")
    config = dict(spec.get(kind) or {})
    if kind == "select":
        config.setdefault("options", [])
    return {"id": uuid.uuid4().hex[:4], "name": name, "type": kind, kind: config}


def text(items: Any, path: str) -> list[str]:
    if not isinstance(items, list):
        raise invalid(f"{path} should be an array.")
    if len(items) > ARRAY_LIMIT:
        raise invalid(f"{path}.length should be ≤ `{ARRAY_LIMIT}`, instead was `{len(items)}`.")
    texts = []
    for i, item in enumerate(items):
        content = (item.get("text") or {}).get("content") if isinstance(item, dict) else None
        if item.get("type", "text") != "text" or not isinstance(content, str):
            raise invalid(f"{path}[{i}].text.content should be a string.")
        if utf16_len(content) > TEXT_LIMIT:
            raise invalid(f"{path}[{i}].text.content.length should be ≤ `{TEXT_LIMIT}`, instead was `{utf16_len(content)}`.")
        link = (item["text"].get("link") or {}).get("url", "")
        if len(link) > TEXT_LIMIT:
            raise invalid(f"{path}[{i}].text.link.url.length should be ≤ `{TEXT_LIMIT}`.")
        texts.append(content)
    return texts


def rich(items: Any, path: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"content": t, "link": None}, "plain_text": t, "href": None} for t in text(items, path)]


def value(prop: dict[str, Any], raw: Any, path: str, attach: Attach) -> dict[str, Any]:
    kind, name = prop["type"], prop["name"]
    if not isinstance(raw, dict) or kind not in raw:
        raise invalid(f"{name} is expected to be {kind}.")
    given = raw[kind]
    if kind in ("title", "rich_text"):
        stored: Any = rich(given, f"{path}.{kind}")
    elif kind == "url":
        if given is not None and (not isinstance(given, str) or len(given) > TEXT_LIMIT):
            raise invalid(f"{path}.url should be a string of ≤ `{TEXT_LIMIT}` characters, or null.")
        stored = given
    elif kind == "date":
        try:
            datetime.fromisoformat(given["start"].replace("Z", "+00:00"))
        except (TypeError, KeyError, AttributeError, ValueError):
            raise invalid(f"{path}.date.start should be an ISO 8601 date.") from None
        stored = {"start": given["start"], "end": given.get("end"), "time_zone": None}
    elif kind == "select":
        option = (given or {}).get("name", "") if given is not None else None
        if option is not None and ("," in option or len(option) > 100 or not option):
            raise invalid(f"{path}.select.name should be 1–100 characters without commas.")
        if option is not None and option not in [o["name"] for o in prop["select"]["options"]]:
            prop["select"]["options"].append({"id": uuid.uuid4().hex[:4], "name": option, "color": "default"})
        stored = {"name": option} if option is not None else None
    elif kind == "files":
        stored = files(given, f"{path}.files", attach)
    else:
        stored = given
    return {"id": prop["id"], "type": kind, kind: stored}


def files(value: Any, path: str, attach: Attach) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > ARRAY_LIMIT:
        raise invalid(f"{path} should be an array of ≤ `{ARRAY_LIMIT}` files.")
    out = []
    for i, item in enumerate(value):
        if item.get("type") == "file_upload":
            upload = attach(item.get("file_upload", {}).get("id", ""), f"{path}[{i}]")
            out.append({"type": "file", "name": item.get("name") or upload["filename"],
                          "file": {"url": f"https://files.emulated/{upload['id']}/{upload['filename']}", "expiry_time": now_iso(3600)}})
        elif item.get("type") == "external":
            out.append({"type": "external", "name": item.get("name", ""), "external": item["external"]})
        else:
            raise invalid(f"{path}[{i}].type should be file_upload or external.")
    return out


def blocks(children: Any, path: str, attach: Attach) -> list[dict[str, Any]]:
    if not isinstance(children, list):
        raise invalid(f"{path} should be an array.")
    if len(children) > ARRAY_LIMIT:
        raise invalid(f"{path}.length should be ≤ `{ARRAY_LIMIT}`, instead was `{len(children)}`.")
    out = []
    for i, block in enumerate(children):
        kind = block.get("type")
        where = f"{path}[{i}]"
        if kind in TEXT_BLOCKS:
            if block[kind].get("children"):
                raise invalid(f"{where}: the emulator takes no nested children.")
            content: dict[str, Any] = {"rich_text": rich(block[kind].get("rich_text"), f"{where}.{kind}.rich_text")}
        elif kind in ("image", "pdf"):
            image = block[kind]
            if image.get("type") == "file_upload":
                upload = attach(image.get("file_upload", {}).get("id", ""), where)
                wanted = "application/pdf" if kind == "pdf" else "image/"
                if not str(upload.get("content_type") or "").startswith(wanted):
                    raise invalid(f"{where}: a {kind} block cannot show a file of type {upload.get('content_type')}.")
                content = {"type": "file", "file": {"url": f"https://files.emulated/{upload['id']}/{upload['filename']}"}, "caption": []}
            elif image.get("type") == "external":
                content = {"type": "external", "external": image["external"], "caption": []}
            else:
                raise invalid(f"{where}.{kind}.type should be file_upload or external.")
        else:
            raise invalid(f"{where}.type {kind!r} is not supported by the emulator.")
        out.append({"object": "block", "id": str(uuid.uuid4()), "type": kind, kind: content, "has_children": False})
    return out
