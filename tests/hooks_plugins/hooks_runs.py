"""Helpers for the detcore-hooks tests: write a small run file and train it on
CPU (synthetic data, tiny model, a few iterations)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

from detcore.runfile import load_run
from detcore.runfile.loader import merge
from detcore.runfile.toml_writer import dumps

PLUGINS_DIR = Path(__file__).resolve().parent
if str(PLUGINS_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGINS_DIR))

SIZE = 48

BASE: dict = {
    "seed": 0,
    "device": "cpu",
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
        "workers": 0,
        "train": {"type": "synthetic", "num_images": 8, "image_size": SIZE, "num_classes": 2, "seed": 0},
        "val": {"type": "synthetic", "num_images": 4, "image_size": SIZE, "num_classes": 2, "seed": 1},
    },
    "optimizer": {"type": "sgd", "lr": 0.02, "momentum": 0.9},
    "lr_schedule": {"type": "constant", "warmup_iters": 0},
    "train": {"max_epochs": 2, "log_interval": 1, "deterministic": True},
    "checkpoint": {"interval": 1, "keep": -1},
    "metrics": [{"type": "scripted", "values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}],
    "hooks": [],
}


def write_run(tmp_path: Path, hooks: list[dict], name: str = "run", **changes) -> Path:
    data = merge(copy.deepcopy(BASE), changes)  # as `extends` merges (detcore.testing.tiny_run does too)
    data["hooks"] = hooks
    data["work_dir"] = str(tmp_path / name)
    path = tmp_path / f"{name}.toml"
    path.write_text(dumps(data))
    return path


def train(path: Path, *, resume: str | None = None, plugin_args=()) -> int:
    """Train in this process (faster than a subprocess: torch is imported once)."""
    import torch

    from detcore.engine.train import train as run_train

    torch.set_num_threads(1)
    return run_train(load_run(path, plugin_args=plugin_args), resume=resume, argv=["train", str(path)])


def _env() -> dict:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(PLUGINS_DIR), os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
    )


def detcore_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``detcore ARGS`` in a subprocess whose stdout is a pipe (not a TTY)."""
    return subprocess.run(
        [sys.executable, "-m", "detcore", *args], capture_output=True, text=True, cwd=cwd, env=_env(), timeout=300
    )


def detcore_on_terminal(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    """``detcore ARGS`` with stdout and stderr on a pseudo-terminal; (exit
    status, everything written to it)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "detcore", *args], stdout=slave, stderr=slave, cwd=cwd, env=_env()
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")
