"""Notion object ids in every form people paste: bare, dashed, a link with `?v=`, a link ending in Title-<id>."""

from __future__ import annotations

import re
import uuid
from urllib.parse import unquote, urlsplit

from sinks.base import SinkConfigError

_HEX32 = re.compile(r"(?:^|[^0-9a-f])([0-9a-f]{32})$")
_DASHED = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")

HOW = "paste the database's link (••• → Copy link) or its 32-character id"


def parse_object_id(text: str, what: str = "database") -> str:
    """The dashed UUID inside `text`; SinkConfigError when there is none."""
    raw = unquote(text.strip())
    candidate = raw
    if "/" in raw or raw.lower().startswith(("http:", "https:", "notion:", "collection:")):
        parts = urlsplit(raw if "://" in raw else "https://" + raw)
        segments = [s for s in parts.path.split("/") if s]
        candidate = segments[-1] if segments else parts.netloc
    candidate = candidate.lower()
    found = _DASHED.search(candidate) or _HEX32.search(candidate)
    if found is None:
        raise SinkConfigError(f"{text.strip()!r} is not a Notion {what} id: {HOW}")
    return str(uuid.UUID(found.group(1)))


def compact(object_id: str) -> str:
    """The 32-hex form Notion shows in links."""
    return object_id.replace("-", "")
