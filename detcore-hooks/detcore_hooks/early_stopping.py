"""``early_stopping``: end training when a validation metric stops improving."""

from __future__ import annotations

import math

from detcore import hookimpl
from detcore.errors import DetcoreError, did_you_mean


class EarlyStoppingHook:
    """See :func:`detcore_hooks.plugin.early_stopping`."""

    name = "early_stopping"

    def __init__(self, *, metric: str, mode: str, patience: int, min_delta: float, check_finite: bool):
        self.metric = metric
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.check_finite = check_finite
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None
        self._epoch = 0  # last epoch trained (runner.epoch has moved on at epoch-end validation)

    @hookimpl
    def detcore_before_train_epoch(self, runner, epoch: int) -> None:
        self._epoch = epoch

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    # trylast: the metric-reading hooks (tensorboard, progress, ...) see this
    # validation before the run is told to stop.
    @hookimpl(trylast=True)
    def detcore_after_val_epoch(self, runner, metrics: dict) -> None:
        if self.metric not in metrics:
            raise DetcoreError(
                f"early_stopping: validation produced no metric '{self.metric}'"
                f"{did_you_mean(self.metric, metrics)}. Metrics of this run: "
                f"{', '.join(sorted(metrics)) or 'none (add a [[metrics]] table)'}. "
                f"Set the hook's 'metric' to one of them."
            )
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            if self.check_finite:
                self._stop(runner, f"{self.metric} is {value}")
            return
        if self.improved(value):
            self.best, self.best_epoch, self.wait = value, self._epoch, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self._stop(
                runner,
                f"{self.metric} has not improved on {self.best:.4g} (epoch {self.best_epoch + 1}) "
                f"by more than {self.min_delta:g} for {self.wait} validation(s)",
            )

    def _stop(self, runner, why: str) -> None:
        self.stopped_epoch = self._epoch
        runner.stop_training = True
        if runner.is_main:
            runner.logger.info(
                "early_stopping: stopping after epoch %d (iteration %d): %s", self._epoch + 1, runner.iter, why
            )

    @hookimpl
    def detcore_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault("hooks", {})[self.name] = {
            "metric": self.metric,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }

    @hookimpl
    def detcore_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get("hooks", {}).get(self.name)
        if state is None:
            return
        if state["metric"] != self.metric:
            runner.logger.warning(
                "early_stopping: the checkpoint watched '%s', this run watches '%s'; starting afresh",
                state["metric"],
                self.metric,
            )
            return
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.wait = int(state["wait"])
        self.stopped_epoch = state["stopped_epoch"]
