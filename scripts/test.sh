#!/usr/bin/env bash
# Install everything into .venv and run the whole test suite (slow end-to-end
# tests included; `-m "not slow"` skips them when iterating).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh setuptools wheel pytest pytest-timeout ruff build faster-coco-eval tensorboard tqdm matplotlib onnx onnxruntime import-linter pyyaml
VENV="${DETCORE_VENV:-.venv}"
"$VENV/bin/ruff" check .
# The import contracts in .importlinter: public API, plugin isolation, layers.
"$VENV/bin/lint-imports"
# Tests never download: the Hugging Face hub client reads this once, at import,
# so a test cannot switch it on later (its offline paths would try the network).
export HF_HUB_OFFLINE=1
"$VENV/bin/python" -m pytest -q "$@"
