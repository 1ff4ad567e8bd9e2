"""The reply as a Feishu message card (card JSON 2.0): the text read, collapsed when long and kept as
plain text so it copies cleanly, a button per place the text also went (the Notion row), and the
engine and the time it took beneath it.

Cards are shared (`update_multi`): Feishu updates a card only when it was sent that way, and the
Notion link is added to a card already posted when the row is written after the reply went out."""

from __future__ import annotations

from typing import Any

# A longer text shows this many lines, with the whole of it in a panel that opens on a tap.
PREVIEW_LINES = 8
PREVIEW_CHARS = 600
TEXT_ID = "ocr_text"  # the element that holds the whole text (tests and tools read it by id)
LINKS_ID = "ocr_links"


def card(
    text: str, *, title: str, meta: str, full_text_label: str, template: str = "blue", links: tuple[tuple[str, str], ...] = ()
) -> dict[str, Any]:
    """`links` are (button label, https URL) pairs."""
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
    if links:
        elements.append({"tag": "column_set", "element_id": LINKS_ID, "columns": [_button(label, url) for label, url in links]})
    if meta:
        elements.append({"tag": "div", "element_id": "ocr_meta", "text": {"tag": "plain_text", "content": meta, "text_size": "notation", "text_color": "grey"}})
    return {
        "schema": "2.0",
        "config": {"wide_screen_mode": True, "update_multi": True},
        "header": {"title": {"tag": "plain_text", "content": title}, "template": template},
        "body": {"elements": elements},
    }


def _button(label: str, url: str) -> dict[str, Any]:
    button = {
        "tag": "button",
        "text": {"tag": "plain_text", "content": label},
        "type": "default",
        "behaviors": [{"type": "open_url", "default_url": url}],
    }
    return {"tag": "column", "width": "auto", "elements": [button]}
