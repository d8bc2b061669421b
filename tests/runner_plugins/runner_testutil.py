"""Helpers shared by the runner tests: a small run file and in-process CLI calls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BASE = """\
plugins = ["runner_testkit"]
seed = 0
device = "cpu"

[model]
type = "tiny_det"
num_classes = {num_classes}

[data]
batch_size = 2
workers = {workers}

[data.train]
type = "synthetic"
num_images = {num_images}
image_size = 32
num_classes = {num_classes}
transforms = [{{ type = "random_horizontal_flip" }}]

[optimizer]
lr = 0.01

[lr_schedule]
type = "multistep"
milestones = [1]
warmup_iters = 2

[train]
{schedule}
log_interval = 1

[checkpoint]
interval = {ckpt_interval}
keep = -1
"""

VAL = """
[data.val]
type = "synthetic"
num_images = {val_images}
image_size = [32, 48]
num_classes = {num_classes}
seed = 1
transforms = [{{ type = "resize", size = 24 }}]

[[metrics]]
type = "scripted"
values = [0.5, 0.9, 0.7]
"""


def write_run(
    directory: Path,
    *,
    schedule: str = "max_epochs = 2",
    num_images: int = 8,
    num_classes: int = 3,
    workers: int = 0,
    ckpt_interval: int = 1,
    val: bool = False,
    val_images: int = 5,
    extra: str = "",
    name: str = "run.toml",
) -> Path:
    text = BASE.format(
        schedule=schedule, num_images=num_images, num_classes=num_classes, workers=workers, ckpt_interval=ckpt_interval
    )
    if val:
        text += VAL.format(val_images=val_images, num_classes=num_classes)
    text += extra
    path = Path(directory) / name
    path.write_text(text)
    return path


def cli(*argv: str) -> int:
    """``detcore ARGV`` in this process (the real CLI entry point)."""
    from detcore.cli.main import main

    return main(["-p", "runner_testkit", *argv])


def cli_subprocess(*argv: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "detcore", "-p", "runner_testkit", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def scalars(work_dir: Path, mode: str = "train") -> list[dict]:
    path = Path(work_dir) / "scalars.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("mode") == mode]


def weights(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["model"]
