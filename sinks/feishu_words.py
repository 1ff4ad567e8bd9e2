"""What the Feishu reply says, in the bot's language: one short sentence for each way a picture can
fail (the technical reason stays for the card's small print and the logs)."""

from __future__ import annotations

from ocr_core.job import OcrResult

WORDS = {
    "zh": {
        "title.ok": "识别结果", "title.failed": "没能识别", "full": "展开全文", "empty.text": "这张图片里没有找到文字。",
        "empty": "这个文件是空的，请重新发送。",
        "too_large": "这张图片太大了，请压缩后再发。",
        "not_an_image": "这不是图片：我能识别图片、截图和 PDF。",
        "damaged": "这个文件已损坏，打不开，请重新发送。",
        "pdf_too_long": "这个 PDF 页数太多了，请只发需要的几页。",
        "pdf_locked": "这个 PDF 设了密码，请发送没有密码的版本。",
        "unavailable": "飞书没有把这张图片交给我，所以没能识别。",
        "unreadable": "抱歉，这张图片没能识别。",
    },
    "en": {
        "title.ok": "Text read", "title.failed": "Could not read this", "full": "Full text", "empty.text": "No text found in this picture.",
        "empty": "This file is empty: please send it again.",
        "too_large": "This picture is too large: please send a smaller one.",
        "not_an_image": "This is not a picture: I read pictures, screenshots and PDFs.",
        "damaged": "This file is damaged and cannot be opened: please send it again.",
        "pdf_too_long": "This PDF has too many pages: please send only the pages you need.",
        "pdf_locked": "This PDF is protected by a password: please send it without one.",
        "unavailable": "Feishu did not hand this picture over to me, so I could not read it.",
        "unreadable": "Sorry, this picture could not be read.",
    },
}


def words(language: str) -> dict[str, str]:
    return WORDS.get(language, WORDS["en"])


def failure(result: OcrResult, language: str) -> str:
    """The one sentence a chat user gets for a picture that could not be read."""
    said = words(language)
    return said.get(result.error_kind or "unreadable", said["unreadable"])

