"""The `ocrhub` command."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ocrhub import __version__
from ocrhub.logs import setup_logging
from ocrhub.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:
    import httpx
    import redis
    from rq.job import Job
    from rq.registry import FailedJobRegistry

# Below this many files a progress bar is noise.
PROGRESS_MIN_FILES = 5


def load() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocrhub")
def main() -> None:
    """ocrhub: images posted in chats, read by OCR, delivered where your team wants them.

    Configuration comes from OCRHUB_* environment variables or a .env file
    (see `ocrhub settings`). With no OCRHUB_REDIS_URL, `ocrhub up` starts an
    embedded redis-server under the data folder.
    """
    # Whatever any command writes (the store, Redis's files, tokens) is its owner's alone.
    os.umask(0o077)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object mapping each path, as typed, to its text.")
def ocr(files: tuple[str, ...], as_json: bool) -> None:
    """Read FILES directly (no queue, no Redis) and print their text.

    Uses the same normalisation, tiling and engine as the workers. Errors go to
    stderr per file; the exit code is 1 if any file failed.
    """
    from tqdm import tqdm

    from ocr_core import reader
    from ocr_core.engines import get_engine
    from ocr_core.errors import OcrHubError

    settings = load()
    try:
        engine = get_engine(settings.ocr_engine, settings.engine_threads)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    texts: dict[str, str] = {}
    failed = 0
    bar = tqdm(total=len(files), file=sys.stderr, unit="image", disable=len(files) < PROGRESS_MIN_FILES)
    for typed in files:
        try:
            reading = reader.read_file(typed, engine, settings)
        except (OSError, OcrHubError) as exc:
            failed += 1
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            bar.write(f"ocrhub: {typed}: {message}", file=sys.stderr)
        else:
            text = "\n".join(line.text for line in reading.lines)
            texts[typed] = text
            if not as_json:
                if len(files) > 1:
                    bar.write(f"==> {typed} <==", file=sys.stdout)
                bar.write(text, file=sys.stdout)
        bar.update(1)
    bar.close()
    if as_json:
        click.echo(json.dumps(texts, ensure_ascii=False, indent=2))
    if failed:
        sys.exit(1)


@main.command()
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--name", default=None, help="Worker name shown in RQ (default: generated).")
def worker(burst: bool, name: str | None) -> None:
    """Run one RQ worker: reads images and delivers results to sinks."""
    from ocrhub.runtime import connect
    from ocrhub.worker import run_worker

    settings = load()
    setup_logging(settings)
    try:
        conn = connect(settings)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    run_worker(conn, settings, burst=burst, name=name)


@main.command()
@click.option("--host", default=None, help="Bind address (default OCRHUB_API_HOST).")
@click.option("--port", default=None, type=int, help="Port (default OCRHUB_API_PORT).")
def serve(host: str | None, port: int | None) -> None:
    """Run the HTTP API (webhooks, uploads, status) under uvicorn."""
    import uvicorn

    settings = load()
    setup_logging(settings)
    from ocrhub.api import create_app
    from ocrhub.http_timeouts import uvicorn_config
    from ocrhub.runtime import connect

    try:
        app = create_app(settings, connect(settings))
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    # OCRHUB_REQUEST_TIMEOUT bounds how long a client may take over its headers and its body.
    config = uvicorn_config(
        app, settings.request_timeout,
        host=host or settings.api_host, port=port if port is not None else settings.api_port, log_level=settings.log_level.lower(),
    )
    uvicorn.Server(config).run()


@main.command()
@click.option("--workers", type=int, default=None, help="Worker processes (default OCRHUB_WORKERS, or one per core).")
@click.option("--port", type=int, default=None, help="API port (default OCRHUB_API_PORT).")
def up(workers: int | None, port: int | None) -> None:
    """Run everything in the foreground: Redis (embedded unless OCRHUB_REDIS_URL), the API and the workers.

    Ctrl-C stops it cleanly: workers finish the image in hand, Redis saves its data.
    """
    import os

    from ocrhub.hub import Hub

    if workers is not None:
        os.environ["OCRHUB_WORKERS"] = str(workers)
    if port is not None:
        os.environ["OCRHUB_API_PORT"] = str(port)
    get_settings.cache_clear()
    settings = load()
    setup_logging(settings)
    sys.exit(Hub(settings).run())


@dataclass
class _Submitted:
    typed: str
    job_id: str = ""
    text: str | None = None
    error: str = ""

    @property
    def done(self) -> bool:
        return self.text is not None or bool(self.error)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for all results.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object mapping each path to its text.")
def submit(files: tuple[Path, ...], timeout: float, as_json: bool) -> None:
    """Send FILES to a running hub's API and print their text, in the order given.

    The hub is the one `ocrhub up` published in the data folder, else the API at
    OCRHUB_API_HOST:OCRHUB_API_PORT. The API token is OCRHUB_API_TOKEN, else the one
    `ocrhub up` generated in the data folder. Uploads go to the `local` sink unless
    OCRHUB_ROUTES routes `upload:*` elsewhere.
    """
    import httpx

    settings = load()
    entries = [_Submitted(str(path)) for path in files]
    told_where = False
    with _api_client(settings) as client:
        for entry, path in zip(entries, files):
            data = path.read_bytes()
            if len(data) > settings.max_image_bytes:
                entry.error = f"{len(data)} bytes, over the {settings.max_image_bytes}-byte limit"
                continue
            response = _call(client, settings, "POST", "/api/images", files={"file": (path.name, data, "application/octet-stream")})
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
            time.sleep(0.2)
    for entry in entries[shown:]:
        if not entry.done:
            entry.error = f"no result within {timeout:.0f} s (still queued; is a worker running?)"
    _show_ready(entries, shown, as_json)
    if as_json:
        click.echo(json.dumps({e.typed: e.text for e in entries if e.text is not None}, ensure_ascii=False, indent=2))
    if any(e.error for e in entries):
        sys.exit(1)


def _poll(client: httpx.Client, settings: Settings, entry: _Submitted) -> None:
    response = _call(client, settings, "GET", f"/api/jobs/{entry.job_id}")
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


def _show_ready(entries: list[_Submitted], shown: int, as_json: bool) -> int:
    """Print the results that are done and have every earlier one done too: argument order, not finishing order."""
    while shown < len(entries) and entries[shown].done:
        entry = entries[shown]
        if entry.error:
            click.echo(f"ocrhub: {entry.typed}: {entry.error}", err=True)
        elif not as_json:
            click.echo(f"==> {entry.typed} <==\n{entry.text}" if len(entries) > 1 else entry.text)
        shown += 1
    return shown


# A hub listening on every interface is reached over loopback from its own machine.
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def api_url(settings: Settings) -> str:
    """The API of the hub `ocrhub up` published in the data folder, else OCRHUB_API_HOST:OCRHUB_API_PORT."""
    from ocrhub.runtime import running_hub

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


def _api_client(settings: Settings) -> httpx.Client:
    import httpx

    from ocrhub.auth import api_token

    token = api_token(settings)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=api_url(settings), headers=headers, timeout=60.0)


def _call(client: httpx.Client, settings: Settings, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the hub's API; no hub or a refused token ends the command with what to do."""
    import httpx

    from ocrhub.auth import token_file

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


@main.command()
@click.argument("query")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
def search(query: str, limit: int) -> None:
    """Search the local knowledge base: the text of every image delivered to the `local` sink.

    Reads DATA_DIR/results.sqlite3 directly (no hub, no API token). Exits 1 when nothing matches.
    """
    import sqlite3

    from sinks.local import LocalStore

    settings = load()
    path = settings.data_dir / "results.sqlite3"
    try:
        exists = path.is_file()
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    if not exists:
        raise click.ClickException(
            f"no local store at {path}: nothing was delivered to the `local` sink with this data folder yet, "
            "or OCRHUB_DATA_DIR points elsewhere than the hub's"
        )
    try:
        store = LocalStore(path)
        rows = store.search(query, limit=limit)
        stored = store.count()
    except (sqlite3.Error, ValueError, OSError) as exc:
        raise click.ClickException(f"cannot search {path}: {exc}") from None
    if not rows:
        click.echo(f"ocrhub: nothing matches {query!r} in {path} ({stored} texts stored)", err=True)
        sys.exit(1)
    for row in rows:
        click.echo(f"{row.created_at}  {row.platform}:{row.chat_id}  {row.sender}  {row.job_id}")
        click.echo("    " + row.text.replace("\n", "\n    "))


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every failed job (of the --queue ones, if given).")
@click.option("--queue", "queue_names", multiple=True, metavar="NAME", help="Only failed jobs of this queue; repeatable. `ocrhub requeue` lists them.")
def requeue(job_ids: tuple[str, ...], every: bool, queue_names: tuple[str, ...]) -> None:
    """Hand failed jobs back to their queue, with their retries renewed.

    JOB_IDS are ids as `ocrhub requeue` (or GET /api/failed) lists them, or an image's job id as
    POST /api/images answers it: its reading and every failed delivery of it. With neither JOB_IDS
    nor --all, list the failed jobs. Talks to the running hub's Redis (or OCRHUB_REDIS_URL).
    """
    import redis
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job
    from rq.registry import FailedJobRegistry
    from rq.serializers import JSONSerializer

    from ocr_core.queue import all_queues, delivery_job_id, ocr_job_id
    from ocrhub.runtime import connect

    settings = load()
    try:
        conn = connect(settings)
        queues = all_queues(conn, settings)
        names = [q.name for q in queues]
        unknown = sorted(set(queue_names) - set(names))
        if unknown:
            raise click.BadParameter(f"no queue {', '.join(unknown)}: the hub's queues are {', '.join(names)}", param_hint="--queue")
        failed = [
            (FailedJobRegistry(queue=q), job_id)
            for q in queues
            if not queue_names or q.name in queue_names
            for job_id in FailedJobRegistry(queue=q).get_job_ids()
        ]
        if not job_ids and not every:
            _list_failed(conn, failed)
            return
        chosen = failed if every else []
        missing = []
        for given in job_ids:
            matches = [(r, i) for r, i in failed if i in (given, ocr_job_id(given)) or i.startswith(delivery_job_id(given, ""))]
            chosen += [m for m in matches if m not in chosen]
            if not matches:
                missing.append(given)
        for registry, job_id in chosen:
            try:
                job = Job.fetch(job_id, connection=conn, serializer=JSONSerializer)
                if job.retries_left is not None and job.retry_intervals:
                    job.retries_left = len(job.retry_intervals)
                _hold_image_again(conn, settings, job)  # before it can run and let go of them
                registry.requeue(job)
            except (NoSuchJobError, InvalidJobOperation):
                click.echo(f"ocrhub: {job_id}: no longer in the failed registry of {registry.name}", err=True)
                continue
            click.echo(f"requeued {job_id} ({registry.name})")
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot reach the hub's Redis: {exc}") from None
    if not chosen and not missing:
        click.echo("nothing to requeue: no failed jobs" + (f" in {', '.join(queue_names)}" if queue_names else ""))
    for given in missing:
        click.echo(f"ocrhub: {given}: no failed job with this id" + (f" in {', '.join(queue_names)}" if queue_names else ""), err=True)
    if missing:
        sys.exit(1)


def _list_failed(conn: redis.Redis, failed: list[tuple[FailedJobRegistry, str]]) -> None:
    from rq.job import Job
    from rq.serializers import JSONSerializer

    if not failed:
        click.echo("no failed jobs")
        return
    for (registry, job_id), job in zip(failed, Job.fetch_many([i for _, i in failed], connection=conn, serializer=JSONSerializer)):
        latest = job.latest_result() if job is not None else None
        reason = [line for line in (latest.exc_string or "").strip().splitlines() if line.strip()][-1:] if latest else []
        click.echo(f"{job_id}  {registry.name}  {reason[0] if reason else ''}".rstrip())
    click.echo(f"requeue them with `ocrhub requeue --all`, or name ids; {len(failed)} failed", err=True)


def _hold_image_again(conn: redis.Redis, settings: Settings, job: Job) -> None:
    """A job that failed for good let go of its image bytes (kept a while for this); the requeued one holds them again."""
    from ocr_core import store
    from ocr_core.job import ImageJob
    from ocr_core.queue import DELIVER, PROCESS

    if job.func_name == PROCESS and job.args:
        store.hold_image(conn, ImageJob.from_dict(job.args[0]).job_id, [store.READER], settings.blob_ttl)
    elif job.func_name == DELIVER and len(job.args) == 2:
        store.hold_image(conn, job.args[0], [store.delivery_holder(job.args[1])], settings.blob_ttl)


@main.command(name="settings")
def show_settings() -> None:
    """Print the settings in force as lines of an env file, secrets as ****.

    What a 0 or an unset value means right now (a running hub's Redis, its workers) follows as a comment.
    """
    from ocrhub.settings import env_lines

    settings = load()
    click.echo("# ocrhub settings in force (environment, .env, defaults); secrets show as ****")
    for line in env_lines(settings, _in_force(settings)):
        click.echo(line)


def _in_force(settings: Settings) -> dict[str, str]:
    """Notes on the values that 0 or unset stand for, as the running hub (if any) resolved them."""
    from urllib.parse import urlsplit

    from ocrhub.auth import api_token, token_file
    from ocrhub.runtime import running_hub
    from ocrhub.settings import SECRET_SHOWN, mask_url

    hub = running_hub(settings)
    notes: dict[str, str] = {}
    if not settings.redis_url:
        if hub:
            notes["redis_url"] = f"{mask_url(hub['redis_url'])} = the Redis of the hub running now (pid {hub['pid']})"
            port = urlsplit(hub["redis_url"]).port
            if not settings.redis_port and port:
                notes["redis_port"] = f"{port} in use now"
        else:
            notes["redis_url"] = "unset: `ocrhub up` starts an embedded redis-server in the data folder"
            if not settings.redis_port:
                notes["redis_port"] = "a free port at each start"
    running = _running_workers(settings) if hub else None
    if hub and running is not None:
        notes["workers"] = f"{running} running in the hub now (pid {hub['pid']})"
    elif not settings.workers:
        notes["workers"] = f"{settings.worker_count} = one per CPU core"
    if not settings.worker_threads:
        notes["worker_threads"] = f"{settings.threads_per_worker} per worker process"
    if not settings.engine_threads:
        notes["engine_threads"] = "1: the workers share the cores" if settings.threads_per_engine else "all cores: one worker"
    if not settings.api_token.get_secret_value():
        try:
            generated = bool(api_token(settings))
        except OSError:
            generated = False
        path = token_file(settings)
        notes["api_token"] = f"{SECRET_SHOWN}, generated in {path}" if generated else f"unset: `ocrhub up` generates one into {path}"
    return notes


def _running_workers(settings: Settings) -> int | None:
    """Worker processes serving the hub's queues (thread workers share their process's pid), or None if Redis is out of reach."""
    import redis
    from rq import Worker

    from ocr_core.queue import ocr_queue
    from ocrhub.runtime import redis_url

    try:
        conn = redis.Redis.from_url(redis_url(settings), socket_timeout=2, socket_connect_timeout=2)
        return len({(w.hostname, w.pid) for w in Worker.all(queue=ocr_queue(conn, settings))})
    except (RuntimeError, redis.RedisError):
        return None


@main.command(name="vllm-command")
@click.option("--port", type=int, default=None, help="Port to serve on; default: the first OCRHUB_VLLM_URLS port, else 8000.")
def vllm_command(port: int | None) -> None:
    """Print the `vllm serve` line that fits the settings in force (HunyuanOCR's recommended flags)."""
    import shlex
    from urllib.parse import urlsplit

    settings = load()
    if port is None:
        port = (urlsplit(settings.vllm_urls[0]).port if settings.vllm_urls else None) or 8000
    # With 'auto' ocrhub finds the limit below vLLM's own cap; 16 is what held on a 24 GB GPU.
    seqs = 16 if settings.vllm_concurrency == "auto" else int(settings.vllm_concurrency)
    words = [
        "vllm", "serve", settings.vllm_model, "--served-model-name", settings.vllm_model,
        "--host", "0.0.0.0", "--port", str(port),
        "--no-enable-prefix-caching", "--mm-processor-cache-gb", "0",
        "--max-num-seqs", str(seqs), "--gpu-memory-utilization", "0.9",
        "--max-model-len", str(max(8192, settings.vllm_max_tokens + 4096)),
        "--trust-remote-code",
    ]
    line = " ".join(shlex.quote(w) for w in words)
    if settings.vllm_api_key.get_secret_value():
        line += ' --api-key "$OCRHUB_VLLM_API_KEY"'  # the secret stays in the environment, not in shell history
    click.echo(line)


@main.command(name="vllm-status")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def vllm_status(as_json: bool) -> None:
    """The vLLM limit in force per server, why it last changed, circuits and the last metrics."""
    from ocr_core.vllm.servers import report
    from ocrhub.runtime import connect

    settings = load()
    if not settings.vllm_urls:
        raise click.ClickException("no vLLM servers configured (OCRHUB_VLLM_URLS)")
    try:
        rows = report(connect(settings), settings.vllm_urls)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    click.echo(f"concurrency: {settings.vllm_concurrency} (bounds {settings.vllm_min_concurrency}..{settings.vllm_max_concurrency})")
    for row in rows:
        m = row["metrics"]
        circuit = row["state"] + (f" for {row['open_for_s']:.0f} s" if row["state"] == "open" else "")
        click.echo(f"{row['url']}: limit {row['limit']} (target {row['target']}), in flight {row['in_flight']}, circuit {circuit}")
        click.echo(f"    last change: {row['reason']}")
        if m:
            click.echo(
                f"    vLLM: healthy={m.get('healthy')} running={m.get('running', '?')} waiting={m.get('waiting', '?')} "
                f"kv={m.get('kv_usage', 0):.0%} preemptions={m.get('preemptions', '?')} {m.get('error', '')}"
            )


def _register_plugins() -> None:
    """Platform and sink commands live beside their code."""
    import importlib

    for path in ("bots.feishu.cli:feishu_connect", "sinks.notion.cli:notion"):
        module_name, _, attr = path.partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        main.add_command(command)


_register_plugins()

if __name__ == "__main__":
    main()
