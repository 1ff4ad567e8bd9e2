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
