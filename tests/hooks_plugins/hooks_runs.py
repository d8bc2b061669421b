"""Helpers for the detcore-hooks tests: write a small run file and train it on
CPU (synthetic data, tiny model, a few iterations)."""

from __future__ import annotations

import sys
from pathlib import Path

from detcore.runfile import load_run
from detcore.testing import tiny_run, write_runfile

PLUGINS_DIR = Path(__file__).resolve().parent
if str(PLUGINS_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGINS_DIR))

SIZE = 48
VAL = {"type": "synthetic", "num_images": 4, "image_size": SIZE, "num_classes": 2, "seed": 1}

# tiny_run's defaults changed for the hooks tests: FCOS with an FPN, 8 images
# of 48 pixels in batches of 4 (2 iterations an epoch), validated every epoch.
RUN = {
    "plugins": ["hooks_probe"],
    "model": {
        "type": "fcos",
        "num_classes": 2,
        "backbone": {"type": "tiny", "width": 8},
        "neck": {"type": "fpn", "out_channels": 32, "extra": "p6p7"},
        "min_size": SIZE,
        "max_size": SIZE,
        "score_thresh": 0.0,
        "detections_per_img": 10,
        "topk_candidates": 50,
    },
    "data": {
        "batch_size": 4,
        "train": {"type": "synthetic", "num_images": 8, "image_size": SIZE, "num_classes": 2, "seed": 0},
        "val": VAL,
    },
    "optimizer": {"type": "sgd", "lr": 0.02, "momentum": 0.9},
    "lr_schedule": {"type": "constant", "warmup_iters": 0},
    "train": {"_replace_": True, "max_epochs": 2, "log_interval": 1, "deterministic": True},
    "checkpoint": {"interval": 1, "keep": -1},
    "metrics": [{"type": "scripted", "values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}],
}


def write_run(tmp_path: Path, hooks: list[dict] | None, name: str = "run", **changes) -> Path:
    """``tmp_path/NAME.toml``: :data:`RUN` on ``tiny_run`` with ``hooks``
    (``None``: no ``hooks`` key) and ``changes`` merged in, trained into
    ``tmp_path/NAME``."""
    run = tiny_run(RUN, changes, hooks=hooks, work_dir=str(tmp_path / name))
    return write_runfile(tmp_path / f"{name}.toml", run)


def train(path: Path, *, resume: str | None = None, plugin_args=()) -> int:
    """Train in this process (faster than a subprocess: torch is imported once)."""
    import torch

    from detcore.engine.train import train as run_train

    torch.set_num_threads(1)
    return run_train(load_run(path, plugin_args=plugin_args), resume=resume, argv=["train", str(path)])
