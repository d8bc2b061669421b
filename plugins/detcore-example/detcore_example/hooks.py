"""The ``loss_history`` runner hook: runtime hooks, and state in checkpoints."""

from __future__ import annotations

import json

from detcore import hookimpl


class LossHistory:
    """Built from a ``[[hooks]]`` table and registered on the plugin manager
    for the run: the runner calls its ``@hookimpl`` methods."""

    def __init__(self, every: int = 1, file: str = "loss_history.jsonl"):
        self.every = every
        self.file = file
        self.history: list[list[float]] = []  # [iteration, loss]
        self.resumed_from: int | None = None

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, losses):
        if iteration % self.every == 0:
            # .item() syncs with the device: only every `every` iterations.
            self.history.append([iteration, float(losses["loss"].item())])
            runner.log_scalars({"example/loss_points": len(self.history)})

    @hookimpl
    def detcore_save_checkpoint(self, runner, checkpoint):
        # Plain lists and numbers: loads with torch.load(weights_only=True).
        checkpoint["hooks"]["loss_history"] = {"history": [list(p) for p in self.history]}

    @hookimpl
    def detcore_load_checkpoint(self, runner, checkpoint):
        state = checkpoint.get("hooks", {}).get("loss_history")
        if state is not None:
            self.history = [list(p) for p in state["history"]]
            self.resumed_from = runner.iter

    @hookimpl
    def detcore_after_run(self, runner):
        if runner.is_main:
            with open(runner.work_dir / self.file, "w") as f:
                for it, loss in self.history:
                    f.write(json.dumps({"iter": it, "loss": loss}) + "\n")
