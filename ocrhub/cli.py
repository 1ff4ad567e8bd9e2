"""The `ocrhub` command."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import click

from ocrhub import __version__
from ocrhub.settings import Settings, SettingsError, get_settings

# Below this many files a progress bar is noise.
PROGRESS_MIN_FILES = 5


def load() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ocrhub")
def main() -> None:
    """ocrhub: images posted in chats, read by OCR, delivered where your team wants them.

    Configuration comes from OCRHUB_* environment variables or a .env file
    (see `ocrhub settings`). With no OCRHUB_REDIS_URL, `ocrhub up` starts an
    embedded redis-server under the data folder.
    """


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
    from ocrhub.runtime import connect

    try:
        app = create_app(settings, connect(settings))
    except (RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    uvicorn.run(app, host=host or settings.api_host, port=port if port is not None else settings.api_port, log_level=settings.log_level.lower(), access_log=False)


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


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for all results.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object mapping each path to its text.")
def submit(files: tuple[Path, ...], timeout: float, as_json: bool) -> None:
    """Queue FILES on a running hub and wait for their text.

    The hub is found through OCRHUB_REDIS_URL or the hub file `ocrhub up` writes.
    """
    from ocr_core.queue import submit_bytes
    from ocr_core.status import job_state
    from ocrhub.runtime import connect

    settings = load()
    try:
        conn = connect(settings)
        conn.ping()
    except Exception as exc:  # noqa: BLE001 - any connection failure means the same thing here
        raise click.ClickException(f"cannot reach the hub's Redis: {exc}") from None
    pending = {}
    for path in files:
        data = path.read_bytes()
        if len(data) > settings.max_image_bytes:
            click.echo(f"ocrhub: {path}: {len(data)} bytes, over the {settings.max_image_bytes}-byte limit", err=True)
            continue
        pending[str(path)] = submit_bytes(conn, data, settings, source="cli", name=path.name).job_id
    texts: dict[str, str] = {}
    failed = len(files) - len(pending)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for typed, job_id in list(pending.items()):
            state = job_state(conn, job_id)
            if not state.done:
                continue
            del pending[typed]
            if state.status == "finished" and state.result is not None:
                texts[typed] = state.result.text
                if not as_json:
                    click.echo(f"==> {typed} <==\n{state.result.text}" if len(files) > 1 else state.result.text)
            else:
                failed += 1
                click.echo(f"ocrhub: {typed}: {state.error}", err=True)
        time.sleep(0.1)
    for typed in pending:
        failed += 1
        click.echo(f"ocrhub: {typed}: no result within {timeout:.0f} s (still queued; is a worker running?)", err=True)
    if as_json:
        click.echo(json.dumps(texts, ensure_ascii=False, indent=2))
    if failed:
        sys.exit(1)


@main.command()
@click.argument("query")
@click.option("--limit", default=20, show_default=True)
def search(query: str, limit: int) -> None:
    """Search the local knowledge base (texts of every image read)."""
    from sinks.local import LocalStore

    settings = load()
    for row in LocalStore(settings.data_dir / "results.sqlite3").search(query, limit=limit):
        click.echo(f"{row.created_at}  {row.platform}:{row.chat_id}  {row.sender}  {row.job_id}")
        click.echo("    " + row.text.replace("\n", "\n    "))


@main.command(name="settings")
def show_settings() -> None:
    """Print the effective settings, secrets masked."""
    settings = load()
    for name, value in settings.model_dump().items():
        field = Settings.model_fields[name]
        shown = "****" if (field.annotation is not None and "SecretStr" in str(field.annotation) and value) else value
        if name == "sinks":
            from sinks.base import mask
            from urllib.parse import urlsplit

            shown = {k: mask(urlsplit(v)) for k, v in value.items()}
        click.echo(f"OCRHUB_{name.upper()}={shown}")


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
