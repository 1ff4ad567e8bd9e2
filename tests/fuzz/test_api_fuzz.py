"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis), against a real
uvicorn configured as `ocrhub serve` runs it, on a real Redis.

Every operation gets schema-valid and schema-breaking cases, sent with the token: none may answer
5xx, and no response may carry a configured secret. Every protected operation also gets cases without
the token, or with a wrong one: each answers 401.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from ocrhub.api import create_app
from tests.api_server import Served, serve_api

TOKEN = "fuzz-api-token-0c9a7e55d1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRETS = {
    "OCRHUB_FEISHU_APP_SECRET": "fuzz-feishu-app-secret-91b2",
    "OCRHUB_FEISHU_ENCRYPT_KEY": "fuzz-feishu-encrypt-key-77c1",
    "OCRHUB_NOTION_TOKEN": "fuzz-notion-token-3e8d",
    "OCRHUB_VLLM_API_KEY": "fuzz-vllm-key-5a0f",
}
VLLM_PASSWORD = "fuzz-vllm-url-pass-2d6b"
# Cases per operation and generation mode. The four operations that take input get valid and
# schema-breaking cases, the two without parameters valid ones, /healthz its single case:
# 4 x 2 x 120 + 2 x 120 + 1 = 1,201 authenticated cases, at least MIN_CASES; then
# UNAUTHENTICATED_CASES for each of the six protected operations (150) without the token or with a wrong one.
# About 1.5 to 2 minutes on two busy cores.
CASES_PER_MODE = 120
MIN_CASES = 1000
UNAUTHENTICATED_CASES = 25
# Cases per admin API operation (tests/admin covers it with a session).
ADMIN_CASES = 30


@pytest.fixture
def served(settings, set_env, conn) -> Iterator[Served]:  # noqa: ARG001 - `settings` sets the environment set_env adds to
    api_settings = set_env(
        api_token=TOKEN,
        max_image_bytes="50000",
        request_timeout="5",
        feishu_app_id="cli_fuzz",
        vllm_urls=f"http://fuzz:{VLLM_PASSWORD}@127.0.0.1:9",
        **{name.removeprefix("OCRHUB_").lower(): value for name, value in SECRETS.items()},
    )
    with TestClient(create_app(api_settings, conn)) as client, serve_api(client.app, api_settings.request_timeout) as server:
        yield server


def fuzz_settings(examples: int):  # noqa: ANN201
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases on every run, so a failure in CI reproduces
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


@pytest.mark.slow
def test_no_input_makes_the_api_fail_or_leak(served):
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", headers=AUTH, timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/images", "/api/jobs/{job_id}", "/api/search", "/api/queue", "/api/engine", "/api/failed"}
    session = requests.Session()
    secrets = [TOKEN, VLLM_PASSWORD, *SECRETS.values()]
    sent: Counter[str] = Counter()
    refused: Counter[str] = Counter()

    admin_operations = [op for op in operations if op.path.startswith("/admin/api/")]
    operations = [op for op in operations if op not in admin_operations]
    assert {op.path for op in admin_operations} >= {"/admin/api/session", "/admin/api/feishu/bots"}
    for operation in admin_operations:
        label = f"{operation.method.upper()} {operation.path}"

        # Behind an admin session, not the token: with no valid session cookie every case is refused
        # (sign-in: no admin password is set here), none fails and none leaks.
        @fuzz_settings(ADMIN_CASES)
        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        def without_a_session(case) -> None:  # noqa: ANN001
            response = case.call(base_url=served.url, session=session, headers=AUTH, timeout=10)
            sent[label] += 1
            assert response.status_code in (401, 403, 404, 405, 422), f"{response.status_code} for {case.as_curl_command()}"
            assert not [s for s in secrets if s in response.text or s in str(response.headers)], case.as_curl_command()

        without_a_session()

    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        # Without parameters or a body there is nothing to break: valid cases only.
        takes_input = any(len(inputs) for inputs in (operation.path_parameters, operation.query, operation.body))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,):

            @fuzz_settings(CASES_PER_MODE)
            @given(case=operation.as_strategy(generation_mode=mode))
            def authenticated(case) -> None:  # noqa: ANN001
                response = case.call(base_url=served.url, session=session, headers=AUTH, timeout=10)
                sent[label] += 1
                assert response.status_code < 500, f"{response.status_code} for {case.as_curl_command()}:\n{response.text[:500]}"
                # A schema-breaking case may drop or mangle the Authorization header: then, and only then, 401.
                with_token = response.request.headers.get("Authorization") == AUTH["Authorization"]
                assert (response.status_code == 401) != with_token, f"{response.status_code} for {case.as_curl_command()} (token sent: {with_token})"
                leaked = [s for s in secrets if s in response.text or s in str(response.headers)]
                assert not leaked, f"secret in the answer to {case.as_curl_command()}"

            authenticated()

        if operation.path == "/healthz":
            continue

        @fuzz_settings(UNAUTHENTICATED_CASES)
        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        def unauthenticated(case) -> None:  # noqa: ANN001
            headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
            wrong = {"Authorization": "Bearer " + TOKEN[::-1]} if refused[label] % 2 else {}
            case.headers = headers
            response = case.call(base_url=served.url, session=session, headers=wrong, timeout=10)
            refused[label] += 1
            assert response.status_code == 401 and response.headers["www-authenticate"] == ["Bearer"], case.as_curl_command()
            assert response.json() == {"detail": "unauthorized"}

        unauthenticated()

    print(f"authenticated cases per operation: {dict(sent)}; unauthenticated: {dict(refused)}")
    assert sum(sent.values()) >= MIN_CASES, sent
    assert all(refused[op] >= 10 for op in refused) and len(refused) == len(operations) - 1, refused
