"""Make PyPI's torchvision (a CUDA build) importable beside the CPU torch.

Its C++ ops library does not load next to torch 2.13.0+cpu, so
``torchvision/_meta_registrations.py`` fails at import on two unguarded
``@torch.library.register_fake("torchvision::nms"/"qnms")`` decorators
("operator torchvision::nms does not exist"). We guard them with
``torchvision.extension._has_ops()`` like the file's other registrations.
vLLM and transformers only need torchvision's Python parts (transforms).

Run with the vllm venv's python; idempotent.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

OPS = ("torchvision::nms", "torchvision::qnms")


def imports_ok() -> bool:
    return subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode == 0


def main() -> int:
    if imports_ok():
        print("torchvision imports fine; no fix needed")
        return 0
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision is not installed", file=sys.stderr)
        return 1
    path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
    text = path.read_text()
    for op in OPS:
        old = f'@torch.library.register_fake("{op}")'
        new = f'@(torch.library.register_fake("{op}") if torchvision.extension._has_ops() else (lambda f: f))'
        text = text.replace(old, new)
    path.write_text(text)
    if not imports_ok():
        err = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True).stderr
        print(f"torchvision still fails to import after the fix:\n{err[-2000:]}", file=sys.stderr)
        return 1
    print(f"patched {path}: guarded register_fake for {', '.join(OPS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
