"""The reply as a Feishu message card (card JSON 2.0): the text read, collapsed when long and kept as
plain text so it copies cleanly, with the engine and the time it took beneath it."""

from __future__ import annotations

from typing import Any

# A longer text shows this many lines, with the whole of it in a panel that opens on a tap.
PREVIEW_LINES = 8
PREVIEW_CHARS = 600
TEXT_ID = "ocr_text"  # the element that holds the whole text (tests and tools read it by id)


def card(text: str, *, title: str, meta: str, full_text_label: str, template: str = "blue") -> dict[str, Any]:
    lines = text.splitlines()
    whole = {"tag": "div", "element_id": TEXT_ID, "text": {"tag": "plain_text", "content": text}}
    if len(lines) > PREVIEW_LINES or len(text) > PREVIEW_CHARS:
        preview = "\n".join(lines[:PREVIEW_LINES])[:PREVIEW_CHARS] + "\n…"
        elements: list[dict[str, Any]] = [
            {"tag": "div", "element_id": "ocr_preview", "text": {"tag": "plain_text", "content": preview}},
            {
                "tag": "collapsible_panel",
                "element_id": "ocr_full",
                "expanded": False,
                "header": {"title": {"tag": "plain_text", "content": full_text_label}},
                "elements": [whole],
            },
        ]
    else:
        elements = [whole]
    if meta:
        elements.append({"tag": "div", "element_id": "ocr_meta", "text": {"tag": "plain_text", "content": meta, "text_size": "notation", "text_color": "grey"}})
    return {
        "schema": "2.0",
        "config": {"wide_screen_mode": True},
        "header": {"title": {"tag": "plain_text", "content": title}, "template": template},
        "body": {"elements": elements},
    }
