"""Sink names, URLs and masking, as a table."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from sinks.base import SinkConfigError, mask, sink_url_for


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("notion://secret_abc@0123456789abcdef0123456789abcdef", "notion://****@0123456789abcdef0123456789abcdef"),
        ("notion://user:pw@host:8080/path?token=x&title=Note", "notion://****@host:8080/path?token=****&title=Note"),
        ("feishu-reply://?thread=1", "feishu-reply://?thread=1"),
        ("local:///var/lib/ocrhub/kb.sqlite3", "local:///var/lib/ocrhub/kb.sqlite3"),
        ("feishu-reply://", "feishu-reply://"),
        # As people paste it: a Notion link after the token keeps its colon.
        ("notion://ntn_abc@https://www.notion.so/team/Inbox-0123456789abcdef0123456789abcdef?v=1",
         "notion://****@https://www.notion.so/team/Inbox-0123456789abcdef0123456789abcdef?v=1"),
        ("redis://:p%40ss@Redis.local:6379/0?password=x", "redis://****@Redis.local:6379/0?password=****"),
        ("notion://?database=https%3A%2F%2Fwww.notion.so%2Fx&auth_token=t", "notion://?database=https%3A%2F%2Fwww.notion.so%2Fx&auth_token=****"),
    ],
)
def test_mask_hides_credentials_and_query(url, shown):
    assert mask(urlsplit(url)) == shown


def test_names_resolve_to_urls(set_env, settings):
    configured = set_env(sinks='{"kb": "notion://t@d"}')
    assert sink_url_for("kb", configured) == "notion://t@d"
    assert sink_url_for("local", configured) == "local://"
    assert sink_url_for("feishu-reply", configured) == "feishu-reply://"
    with pytest.raises(SinkConfigError, match="OCRHUB_SINKS"):
        sink_url_for("nope", configured)
