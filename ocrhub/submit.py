"""`ocrhub submit`: image files sent to a running hub's API, their text printed in the order given.

Errors a user can act on (no hub answering, a refused token) end the command with what to do;
a file the hub refuses, or whose reading fails, is one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

from ocrhub.auth import api_token, token_file
from ocrhub.runtime import running_hub
from ocrhub.settings import Settings

# A hub listening on every interface is reached over loopback from its own machine.
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}
# Between two rounds of asking the hub how its jobs are doing.
POLL_INTERVAL_S = 0.2
# One request, upload or status; the overall wait is the command's --timeout.
REQUEST_TIMEOUT_S = 60.0


@dataclass
class Submitted:
    typed: str
    job_id: str = ""
    text: str | None = None
    error: str = ""

    @property
    def done(self) -> bool:
        return self.text is not None or bool(self.error)


def submit_files(settings: Settings, files: tuple[Path, ...], timeout: float, as_json: bool) -> None:
    """Upload `files`, print each text once it and every earlier one are done; exit 1 if any failed."""
    entries = [Submitted(str(path)) for path in files]
    told_where = False
    with api_client(settings) as client:
        for entry, path in zip(entries, files):
            data = path.read_bytes()
            if len(data) > settings.max_image_bytes:
                entry.error = f"{len(data)} bytes, over the {settings.max_image_bytes}-byte limit"
                continue
            response = call(client, settings, "POST", "/api/images", files={"file": (path.name, data, "application/octet-stream")})
            if response.status_code == 202:
                body = response.json()
                entry.job_id = body["job_id"]
                if "sinks" in body and not told_where:
                    told_where = True
                    click.echo(f"ocrhub: texts go to {', '.join(body['sinks'])} ({body.get('sinks_from', 'OCRHUB_ROUTES')})", err=True)
            else:
                entry.error = f"the hub refused it ({response.status_code}): {_detail(response)}"
        shown = 0
        deadline = time.monotonic() + timeout
        while True:
            for entry in entries:
                if not entry.done:
                    try:
                        _poll(client, settings, entry)
                    except httpx.TransportError:
                        pass  # the hub may be restarting; the deadline decides
            shown = _show_ready(entries, shown, as_json)
            if shown == len(entries) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL_S)
    for entry in entries[shown:]:
        if not entry.done:
            entry.error = f"no result within {timeout:.0f} s (still queued; is a worker running?)"
    _show_ready(entries, shown, as_json)
    if as_json:
        click.echo(json.dumps({e.typed: e.text for e in entries if e.text is not None}, ensure_ascii=False, indent=2))
    if any(e.error for e in entries):
        sys.exit(1)


def _poll(client: httpx.Client, settings: Settings, entry: Submitted) -> None:
    response = call(client, settings, "GET", f"/api/jobs/{entry.job_id}")
    if response.status_code == 404:
        entry.error = f"the hub does not know job {entry.job_id} (any more)"
        return
    if response.status_code != 200:
        return  # a passing 5xx (Redis restarting): ask again
    body = response.json()
    if body["status"] == "finished":
        entry.text = body.get("text") or ""
    elif body["status"] == "failed":
        entry.error = body.get("error") or "failed"


def _show_ready(entries: list[Submitted], shown: int, as_json: bool) -> int:
    """Print the results that are done and have every earlier one done too: argument order, not finishing order."""
    while shown < len(entries) and entries[shown].done:
        entry = entries[shown]
        if entry.error:
            click.echo(f"ocrhub: {entry.typed}: {entry.error}", err=True)
        elif not as_json:
            click.echo(f"==> {entry.typed} <==\n{entry.text}" if len(entries) > 1 else entry.text)
        shown += 1
    return shown


def api_url(settings: Settings) -> str:
    """The API of the hub `ocrhub up` published in the data folder, else OCRHUB_API_HOST:OCRHUB_API_PORT."""
    hub = running_hub(settings)
    if hub and hub.get("api_url"):
        host, _, port = hub["api_url"].partition("://")[2].rstrip("/").rpartition(":")
    else:
        host, port = settings.api_host, str(settings.api_port)
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def api_client(settings: Settings) -> httpx.Client:
    """A client of the hub's API carrying the API token in force (none when none is set)."""
    token = api_token(settings)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api_url(settings), headers=headers, timeout=REQUEST_TIMEOUT_S)


def call(client: httpx.Client, settings: Settings, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the hub's API; no hub or a refused token ends the command with what to do."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.ConnectError as exc:
        raise click.ClickException(
            f"no hub answers at {client.base_url} ({exc}): start one with `ocrhub up`, or set "
            "OCRHUB_API_HOST / OCRHUB_API_PORT to where its API listens"
        ) from None
    if response.status_code == 401:
        problem = "refused the API token" if "authorization" in client.headers else "wants an API token and none is set"
        raise click.ClickException(
            f"the hub at {client.base_url} {problem}: set OCRHUB_API_TOKEN to the hub's token "
            f"(a hub that generated its own keeps it in {token_file(settings)})"
        )
    return response


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text.strip()[:200] or response.reason_phrase
