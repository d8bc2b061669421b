#!/usr/bin/env bash
# Create .venv (if missing) and install detcore, its distributions and the
# bundled plugins into it, editable. torch and torchvision are installed
# together in one pip call: installing torch alone first can pick a build
# that the torchvision wheel does not match.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DETCORE_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
PKGS=(-e . -e ./detcore-coco -e ./detcore-hooks)
for p in plugins/*/; do
    [ -f "$p/pyproject.toml" ] && PKGS+=(-e "./$p")
done
"$PY" -m pip install -q "${PKGS[@]}" "$@"
