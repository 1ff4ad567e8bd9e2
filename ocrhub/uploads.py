"""An image sent to POST /api/images, read within OCRHUB_MAX_IMAGE_BYTES whatever the client sends.

Two shapes are accepted: a multipart form (the first file part, whatever its field name: `curl -F
file=@x.png` and `-F image=@x.png` both work), or the raw body under any other content type
(`curl --data-binary @x.png` sends application/x-www-form-urlencoded, which is not a form here).
A declared Content-Length over the limit is refused before a byte of the body is read; a body
without one (chunked) is read up to the limit and refused there. No more than the limit (plus a
form's headers) is ever held.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import AsyncIterator

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.types import Message

# What a multipart form adds around the file: boundaries, part headers, a few small fields.
FORM_OVERHEAD = 64 * 1024
NAME_MAX_CHARS = 200
# Answers that leave the body unread close the connection, rather than have uvicorn drain it.
CLOSE = {"Connection": "close"}
HOW_TO = "send the image as the raw body (curl --data-binary @photo.png URL) or as a form file (curl -F file=@photo.png URL)"


async def read_image(request: Request, limit: int, raw_name: str = "") -> tuple[bytes, str]:
    """The image bytes and a name for them (the form file's name, else `raw_name`); raises
    HTTPException 400 or 413 saying what to do instead."""
    content_type = request.headers.get("content-type", "")
    is_form = content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"
    allowed = limit + FORM_OVERHEAD if is_form else limit
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit()):
        raise HTTPException(400, "Content-Length is not a number", headers=CLOSE)
    if declared is not None and int(declared) > allowed:
        raise HTTPException(413, f"the upload is {declared} bytes, over the {limit}-byte limit (OCRHUB_MAX_IMAGE_BYTES)", headers=CLOSE)
    if is_form:
        data, name = await _first_file(request, limit, allowed)
    else:
        data, name = await _body(request.stream(), limit), raw_name
    if not data:
        raise HTTPException(400, f"empty upload: {HOW_TO}")
    return data, clean_name(name)


async def _body(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    buffer = io.BytesIO()
    async for chunk in chunks:
        if buffer.tell() + len(chunk) > limit:
            raise _too_large(limit)
        buffer.write(chunk)
    # BytesIO hands over its buffer without a copy when nothing else views it.
    return buffer.getvalue()


async def _first_file(request: Request, limit: int, allowed: int) -> tuple[bytes, str]:
    received = 0

    async def capped_receive() -> Message:
        nonlocal received
        message = await request.receive()
        received += len(message.get("body", b""))
        if received > allowed:
            raise _too_large(limit)
        return message

    # Starlette spools each file part to disk past 1 MB; the cap above bounds the whole form.
    form = await Request(request.scope, capped_receive).form(max_files=8, max_fields=32)
    try:
        upload = next((value for _, value in form.multi_items() if isinstance(value, UploadFile)), None)
        if upload is None:
            raise HTTPException(400, f"the form has no file part: {HOW_TO}")
        if upload.size is not None and upload.size > limit:
            raise _too_large(limit)
        return await upload.read(), upload.filename or ""
    finally:
        await form.close()


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the upload is over the {limit}-byte limit (OCRHUB_MAX_IMAGE_BYTES)", headers=CLOSE)


def clean_name(name: str) -> str:
    """A name fit for logs and job descriptions: printable characters only, bounded, never empty."""
    kept = "".join(c for c in name if unicodedata.category(c)[0] not in {"C"})
    return kept.strip()[:NAME_MAX_CHARS] or "image"
