"""Pillow's own test images (`Tests/images` of its source distribution), fetched once per machine,
and a child process that runs the image normaliser over them one file at a time, so that a hang or a
crash in a decoder is seen as such (and bounded) instead of taking the test run down.

The corpus comes from the package index through pip, the one outside source tests may use, and is
cached under `$OCRHUB_TEST_CACHE` (default `~/.cache/ocrhub-tests`) as `pillow-<version>/Tests/images`.
"""

from __future__ import annotations

import io
import json
import os
import resource
import selectors
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import PIL

__all__ = ["CorpusUnavailable", "Outcome", "cache_root", "normalise_each", "pillow_images"]

CACHE_ENV = "OCRHUB_TEST_CACHE"
_MEMBER_DIR = PurePosixPath("Tests", "images")
# Enough for the biggest image the normaliser accepts (60 MP as 8-bit RGB plus its working copies);
# a decoder that wants more fails here with MemoryError instead of swapping the machine.
_CHILD_ADDRESS_SPACE = 4 << 30


class CorpusUnavailable(RuntimeError):
    """The corpus could not be fetched; the message says why and how to fix it."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ocrhub-tests")


def pillow_images(version: str = PIL.__version__) -> Path:
    """The `Tests/images` folder of Pillow `version`'s source distribution, downloaded on first use."""
    folder = cache_root() / f"pillow-{version}"
    images = folder / _MEMBER_DIR
    if images.is_dir():
        return images
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".pillow-{version}-", dir=cache_root()) as scratch:
        sdist = _download_sdist(version, Path(scratch))
        staged = Path(scratch) / "staged"
        _extract_images(sdist, staged)
        try:
            # One rename, so a run that is killed half-way, or a second run at the same time,
            # never sees a half-filled cache.
            staged.rename(folder)
        except OSError:
            if not images.is_dir():
                raise
    return images


def _download_sdist(version: str, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-input", "--disable-pip-version-check",
        # Only Pillow itself as source: pip still builds its metadata, and its build tools come as wheels.
        "--no-deps", "--no-binary", "pillow", "--dest", str(into), f"pillow=={version}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        raise CorpusUnavailable(f"`{' '.join(command)}` took over 10 minutes") from None
    found = sorted(into.glob("pillow-*.tar.gz"))
    if done.returncode != 0 or not found:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise CorpusUnavailable(
            f"could not download Pillow {version}'s source distribution for its test images "
            f"(`{' '.join(command)}` exited {done.returncode}):\n{tail}\n"
            f"The package index must be reachable; or place an extracted copy at {cache_root() / f'pillow-{version}'}/Tests/images "
            f"(the cache folder is set by {CACHE_ENV})."
        )
    return found[0]


def _extract_images(sdist: Path, into: Path) -> None:
    with tarfile.open(sdist) as archive:
        members = []
        for member in archive.getmembers():
            parts = PurePosixPath(member.name).parts
            # The archive's top folder is `pillow-<version>/`.
            if len(parts) > 3 and PurePosixPath(*parts[1:3]) == _MEMBER_DIR and member.isfile():
                member.name = str(PurePosixPath(*parts[1:]))
                members.append(member)
        if not members:
            raise CorpusUnavailable(f"{sdist.name} has no {_MEMBER_DIR} folder")
        archive.extractall(into, members=members, filter="data")


@dataclass(frozen=True)
class Outcome:
    """What the normaliser made of one file.

    `kind` is "image" (normalised), "refused" (ImageError), "error" (any other exception),
    "hang" (over the time bound) or "crash" (the process died)."""

    path: str
    kind: str
    message: str = ""
    seconds: float = 0.0
    stderr: str = ""  # anything the decoders or Python wrote to stderr or stdout for this file
    source_format: str = ""
    source_mode: str = ""
    source_transparent: bool = False  # the source declares a transparent colour or palette entries
    size: tuple[int, int] = (0, 0)  # of the normalised image
    mode: str = ""  # of the normalised image
    grown_kb: int = 0  # growth of the process's peak memory while decoding this file
    pillow_decodes: bool = False  # for a refused file: Pillow alone, with the same decoders, decodes it


def normalise_each(paths: Iterable[Path], *, max_pixels: int, max_bytes: int, timeout: float) -> Iterator[Outcome]:
    """Run `ocr_core.image.normalise` on every file in a child process, `timeout` seconds at most each;
    a child that hangs is killed and one that dies is replaced, and the run goes on."""
    runner: _Child | None = None
    try:
        for path in paths:
            if runner is None:
                runner = _Child(max_pixels, max_bytes)
            outcome = runner.normalise(path, timeout)
            if outcome.kind in ("hang", "crash"):
                runner.close()
                runner = None
            yield outcome
    finally:
        if runner is not None:
            runner.close()


class _Child:
    def __init__(self, max_pixels: int, max_bytes: int) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.corpus", str(max_pixels), str(max_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self.selector.register(self.process.stdout, selectors.EVENT_READ)
        self.buffer = b""

    def normalise(self, path: Path, timeout: float) -> Outcome:
        assert self.process.stdin is not None and self.process.stdout is not None
        written = self.stderr.tell()
        started = time.monotonic()
        try:
            self.process.stdin.write(os.fsencode(path) + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return Outcome(str(path), "crash", f"the child had exited ({self.process.wait()})")
        while b"\n" not in self.buffer:
            remaining = started + timeout - time.monotonic()
            if remaining <= 0 or not self.selector.select(remaining):
                return Outcome(str(path), "hang", f"no answer in {timeout:.0f} s", time.monotonic() - started, self._stderr_since(written))
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                code = self.process.wait()
                return Outcome(str(path), "crash", f"the process died (exit {code})", time.monotonic() - started, self._stderr_since(written))
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer = json.loads(line)
        answer["size"] = tuple(answer["size"])
        return Outcome(**answer, stderr=self._stderr_since(written))

    def _stderr_since(self, offset: int) -> str:
        self.stderr.seek(offset)
        text = self.stderr.read().decode(errors="replace")
        self.stderr.seek(0, os.SEEK_END)
        return text

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.selector.close()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.stderr.close()


def _serve(max_pixels: int, max_bytes: int) -> None:
    """Child side: read one path a line from stdin, answer one JSON line on the original stdout."""
    from PIL import Image

    from ocr_core.errors import ImageError
    from ocr_core.image import normalise

    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    # Whatever a decoder prints to stdout is noise too; send it where the parent looks for noise.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if sys.platform == "linux":
        resource.setrlimit(resource.RLIMIT_AS, (_CHILD_ADDRESS_SPACE, _CHILD_ADDRESS_SPACE))
    for line in sys.stdin:
        path = line.rstrip("\n")
        data = Path(path).read_bytes()
        answer: dict[str, object] = {"path": path, "size": (0, 0)}
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        try:
            image = normalise(data, max_pixels=max_pixels, max_bytes=max_bytes)
        except ImageError as exc:
            answer.update(kind="refused", message=str(exc))
        except BaseException as exc:  # noqa: BLE001 - any other exception is what the test looks for
            answer.update(kind="error", message=f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        else:
            answer.update(kind="image", size=image.size, mode=image.mode)
        answer["seconds"] = time.perf_counter() - started
        answer["grown_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
        if answer["kind"] == "image":
            with Image.open(io.BytesIO(data)) as source:  # its header only, for the record
                answer.update(
                    source_format=source.format or "", source_mode=source.mode, source_transparent="transparency" in source.info
                )
        elif answer["kind"] == "refused":
            answer["pillow_decodes"] = _pillow_decodes(data)
        sys.stderr.flush()
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def _pillow_decodes(data: bytes) -> bool:
    from PIL import Image

    from ocr_core.image import FORMATS

    try:
        with Image.open(io.BytesIO(data), formats=[name for name in FORMATS if name in Image.OPEN]) as image:
            image.load()
    except Exception:  # noqa: BLE001 - whatever stops Pillow, it does not decode the file
        return False
    return True


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
