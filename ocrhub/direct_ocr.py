"""`ocrhub ocr`: files read in this process (no queue, no Redis) with the workers' normalisation,
tiling and engine, their text printed as each one is read."""

from __future__ import annotations

import json
import sys

import click
from tqdm import tqdm

from ocr_core import reader
from ocr_core.engines import get_engine
from ocr_core.errors import OcrHubError
from ocrhub.settings import Settings

# Below this many files a progress bar is noise.
PROGRESS_MIN_FILES = 5


def read_and_print(settings: Settings, files: tuple[str, ...], as_json: bool) -> None:
    """Print each file's text (or, with `as_json`, one object by path as typed); errors per file on stderr, exit 1 if any."""
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
