"""The bot's message cards (card JSON 2.0).

`text_card`: a picture's text, collapsed when long and kept as plain text so it copies cleanly, a
button per place the text also went (the Notion row), and the engine and the time it took beneath.
`search_card`: the matches of a search in the chat, each with its sender shown by Feishu (a person
element: a name, without notifying anyone), its date and its link.

Everything people wrote goes into plain_text, never markdown, so no text read from a picture can
format, link or @-mention. Cards are shared (`update_multi`): Feishu updates a card only when it was
sent that way, and the Notion link is added to a card already posted when the row comes later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# A longer text shows this many lines, with the whole of it in a panel that opens on a tap.
PREVIEW_LINES = 8
PREVIEW_CHARS = 600
TEXT_ID = "ocr_text"  # the element that holds the whole text (tests and tools read it by id)
LINKS_ID = "ocr_links"
# Only Notion rows' links reach a chat (sinks.base.chat_links), so every link button opens one.
NOTION_BUTTON = {"zh": "在 Notion 中打开", "en": "Open in Notion"}


def notion_button(language: str) -> str:
    return NOTION_BUTTON.get(language, NOTION_BUTTON["en"])


def text_card(
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
        elements.append({"tag": "column_set", "element_id": LINKS_ID, "columns": [_column(_button(label, url)) for label, url in links]})
    if meta:
        elements.append(_small(meta, "ocr_meta"))
    return _card(title, template, elements)


@dataclass(frozen=True)
class Match:
    snippet: str
    sender: str  # an open_id (ou_…) is shown by name; anything else as written
    date: str
    link: tuple[str, str] | None = None  # (button label, https URL)


def search_card(title: str, matches: list[Match], note: str = "") -> dict[str, Any]:
    elements: list[dict[str, Any]] = []
    for number, match in enumerate(matches, 1):
        if number > 1:
            elements.append({"tag": "hr"})
        elements.append({"tag": "div", "text": {"tag": "plain_text", "content": f"{number}. {match.snippet}"}})
        who = (
            {"tag": "person", "user_id": match.sender, "size": "extra_small", "show_avatar": True, "show_name": True}
            if match.sender.startswith("ou_") else _small(match.sender)
        )  # fmt: skip
        columns = [_column(who)] if match.sender else []
        columns += [_column(_small(match.date))] if match.date else []
        columns += [_column(_button(*match.link))] if match.link else []
        if columns:
            elements.append({"tag": "column_set", "horizontal_spacing": "8px", "columns": columns})
    if note or not elements:
        elements.append(_small(note or "…"))
    return _card(title, "blue", elements)


def _card(title: str, template: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema": "2.0",
        "config": {"wide_screen_mode": True, "update_multi": True},
        "header": {"title": {"tag": "plain_text", "content": title}, "template": template},
        "body": {"elements": elements},
    }


def _small(text: str, element_id: str = "") -> dict[str, Any]:
    shown = {"tag": "div", "text": {"tag": "plain_text", "content": text, "text_size": "notation", "text_color": "grey"}}
    return {**shown, "element_id": element_id} if element_id else shown


def _column(element: dict[str, Any]) -> dict[str, Any]:
    return {"tag": "column", "width": "auto", "vertical_align": "center", "elements": [element]}


def _button(label: str, url: str) -> dict[str, Any]:
    return {"tag": "button", "text": {"tag": "plain_text", "content": label}, "type": "default", "size": "small",
            "behaviors": [{"type": "open_url", "default_url": url}]}  # fmt: skip
