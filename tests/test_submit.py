"""Where `ocrhub submit` finds the hub's API: the address the running hub published, reachable from this machine."""

from __future__ import annotations

import pytest

from ocrhub import runtime
from ocrhub.submit import api_url


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ("http://0.0.0.0:8123", "http://127.0.0.1:8123"),  # listening everywhere: reached over loopback
        ("http://[::]:8123/", "http://127.0.0.1:8123"),
        ("http://::1:8123", "http://[::1]:8123"),
        ("http://10.1.2.3:9000", "http://10.1.2.3:9000"),
    ],
)
def test_the_running_hubs_published_api_wins(settings, published, expected):
    runtime.publish(settings, settings.redis_url, published)  # this test process stands for the hub
    assert api_url(settings) == expected


def test_without_a_hub_the_settings_name_the_api(set_env):
    assert api_url(set_env(api_host="0.0.0.0", api_port="8500")) == "http://127.0.0.1:8500"
    assert api_url(set_env(api_host="fd00::7", api_port="8501")) == "http://[fd00::7]:8501"
