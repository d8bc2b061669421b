#!/usr/bin/env bash
# The main job end to end: install, make the bundled synthetic shapes data,
# train the demo detector on it, and evaluate the best checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
VENV="${DETCORE_VENV:-.venv}"
"$VENV/bin/detcore" coco make-shapes data/shapes
# --resume auto: a second demo run continues (or just re-validates) the first
# one instead of being refused (a work dir holds one run: docs/training.md).
"$VENV/bin/detcore" train configs/demo_shapes.toml --resume auto
"$VENV/bin/detcore" test configs/demo_shapes.toml --checkpoint work_dirs/demo_shapes/iter_400.pth
