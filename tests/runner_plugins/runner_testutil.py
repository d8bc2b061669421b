"""Helpers shared by the runner tests: the run they train (the test plugin
``runner_testkit``'s ``tiny_det`` on 32-pixel synthetic images, a multistep
LR) built on :func:`detcore.testing.tiny_run`, and ``detcore -p
runner_testkit`` in this process or in a real one."""

from __future__ import annotations

from pathlib import Path

from detcore.testing import run_detcore, tiny_run, write_runfile

HERE = Path(__file__).resolve().parent

# tiny_run's defaults changed for the runner tests; 8 images, batch 2: an
# epoch is 4 iterations.
RUN = {
    "plugins": ["runner_testkit", "detcore.testing"],  # the detector, hooks and metric the tests name
    "model": {"type": "tiny_det", "num_classes": 3},
    "data": {
        "train": {
            "type": "synthetic",
            "num_images": 8,
            "image_size": 32,
            "num_classes": 3,
            "transforms": [{"type": "random_horizontal_flip"}],
        },
    },
    "optimizer": {"lr": 0.01},
    "lr_schedule": {"type": "multistep", "milestones": [1], "warmup_iters": 2},
    "checkpoint": {"interval": 1, "keep": -1},
}

# A layer adding validation: 5 images of 32x48 resized to 24x36, and the
# scripted metric (0.5, 0.9, 0.7).
VAL = {
    "data": {
        "val": {
            "type": "synthetic",
            "num_images": 5,
            "image_size": [32, 48],
            "num_classes": 3,
            "seed": 1,
            "transforms": [{"type": "resize", "size": 24}],
        },
    },
    "metrics": [{"type": "scripted", "values": [0.5, 0.9, 0.7]}],
}


def tiny_det_run(*layers: dict, train: dict | None = None, **changes) -> dict:
    """The runner tests' run as a dict: :data:`RUN` on ``tiny_run``, then
    ``layers`` and ``changes`` merged in as ``tiny_run`` merges them.
    ``train`` is the whole ``[train]`` table but ``log_interval = 1``
    (default: ``max_epochs = 2``), so a schedule never mixes epochs and
    iterations."""
    schedule = {"_replace_": True, "log_interval": 1, **(train or {"max_epochs": 2})}
    return tiny_run(RUN, *layers, changes, train=schedule)


def write_run(directory: Path, *layers: dict, name: str = "run.toml", **changes) -> Path:
    """:func:`tiny_det_run` written as ``directory/name``."""
    return write_runfile(Path(directory) / name, tiny_det_run(*layers, **changes))


def cli(*argv: str) -> int:
    """``detcore -p runner_testkit ARGV`` in this process (the real CLI entry point)."""
    from detcore.cli.main import main

    return main(["-p", "runner_testkit", *argv])


def cli_subprocess(*argv: str, cwd: Path, timeout: float = 240):
    """``detcore -p runner_testkit ARGV`` in a real process (:func:`run_detcore`)."""
    return run_detcore("-p", "runner_testkit", *argv, cwd=cwd, plugin_paths=[HERE], timeout=timeout)


def weights(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["model"]
