"""The `ocrhub` command: the group, every subcommand's arguments and help, and the small commands.

The larger commands' work lives in their own modules (`direct_ocr`, `submit`, `requeue`,
`settings_in_force`, `vllm_commands`), imported inside the command that needs them, so that
`ocrhub --help` stays fast and the API process never loads what only a worker needs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ocrhub import __version__
from ocrhub.logs import setup_logging
from ocrhub.settings import Settings, SettingsError, get_settings


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
    from ocrhub.direct_ocr import read_and_print

    read_and_print(load(), files, as_json)


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
    from ocrhub.hub import Hub

    if workers is not None:
        os.environ["OCRHUB_WORKERS"] = str(workers)
    if port is not None:
        os.environ["OCRHUB_API_PORT"] = str(port)
    get_settings.cache_clear()
    settings = load()
    _check_admin_password(settings)
    setup_logging(settings)
    sys.exit(Hub(settings).run())


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
    from ocrhub.submit import submit_files

    submit_files(load(), files, timeout, as_json)


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

    from ocrhub.requeue import UnknownQueue, choose, failed_jobs, hand_back, last_errors
    from ocrhub.runtime import connect

    settings = load()
    scope = f" in {', '.join(queue_names)}" if queue_names else ""
    try:
        conn = connect(settings)
        try:
            failed = failed_jobs(conn, settings, queue_names)
        except UnknownQueue as exc:
            raise click.BadParameter(str(exc), param_hint="--queue") from None
        if not job_ids and not every:
            if not failed:
                click.echo("no failed jobs")
                return
            for job, reason in zip(failed, last_errors(conn, failed)):
                click.echo(f"{job.job_id}  {job.registry.name}  {reason}".rstrip())
            click.echo(f"requeue them with `ocrhub requeue --all`, or name ids; {len(failed)} failed", err=True)
            return
        chosen, missing = choose(failed, job_ids, every)
        for job in chosen:
            if hand_back(conn, settings, job):
                click.echo(f"requeued {job.job_id} ({job.registry.name})")
            else:
                click.echo(f"ocrhub: {job.job_id}: no longer in the failed registry of {job.registry.name}", err=True)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    except redis.RedisError as exc:
        raise click.ClickException(f"cannot reach the hub's Redis: {exc}") from None
    if not chosen and not missing:
        click.echo(f"nothing to requeue: no failed jobs{scope}")
    for given in missing:
        click.echo(f"ocrhub: {given}: no failed job with this id{scope}", err=True)
    if missing:
        sys.exit(1)


@main.command(name="settings")
def show_settings() -> None:
    """Print the settings in force as lines of an env file, secrets as ****.

    What a 0 or an unset value means right now (a running hub's Redis, its workers) follows as a comment.
    """
    from ocrhub.settings import env_lines
    from ocrhub.settings_in_force import notes_in_force

    settings = load()
    click.echo("# ocrhub settings in force (environment, .env, defaults); secrets show as ****")
    for line in env_lines(settings, notes_in_force(settings)):
        click.echo(line)


@main.command(name="vllm-command")
@click.option("--port", type=int, default=None, help="Port to serve on; default: the first OCRHUB_VLLM_URLS port, else 8000.")
def vllm_command(port: int | None) -> None:
    """Print the `vllm serve` line that fits the settings in force (HunyuanOCR's recommended flags)."""
    from ocrhub.vllm_commands import serve_line

    click.echo(serve_line(load(), port))


@main.command(name="vllm-status")
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
def vllm_status(as_json: bool) -> None:
    """The vLLM limit in force per server, why it last changed, circuits and the last metrics."""
    from ocr_core.vllm.servers import report
    from ocrhub.runtime import connect
    from ocrhub.vllm_commands import status_lines

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
    for line in status_lines(settings, rows):
        click.echo(line)


@main.group()
def admin() -> None:
    """The admin page (/admin)."""


@admin.command(name="set-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from standard input (one line) instead of prompting.")
def set_password(from_stdin: bool) -> None:
    """Store a hash of the admin password in the data folder (instead of OCRHUB_ADMIN_PASSWORD)."""
    from ocrhub.admin.passwords import AdminPasswordError, store_password

    settings = load()
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Admin password", hide_input=True, confirmation_prompt=True)
    try:
        path = store_password(settings, password)
    except AdminPasswordError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"stored a hash of the admin password in {path}; sign in at /admin (a running hub takes it at its next start)")
    if settings.admin_password.get_secret_value():
        click.echo("note: OCRHUB_ADMIN_PASSWORD is set and takes precedence over the stored hash; unset it", err=True)


def _check_admin_password(settings: Settings) -> None:
    from ocrhub.admin.passwords import AdminPasswordError, credential

    try:
        credential(settings)
    except AdminPasswordError as exc:
        raise click.ClickException(str(exc)) from None


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
