"""``tensorboard``: losses, lr and validation metrics as TensorBoard scalars."""

from __future__ import annotations

from pathlib import Path

from detcore import hookimpl
from detcore.errors import DetcoreError


class TensorBoardHook:
    """See :func:`detcore_hooks.plugin.tensorboard`.

    Tags: ``train/<loss name>`` and ``train/loss`` (means over the logging
    interval), ``train/lr`` (and ``train/lr_group<i>`` when the parameter
    groups differ), ``val/<metric>``; the step is the global iteration.
    """

    name = "tensorboard"

    def __init__(self, *, log_dir: str | None, interval: int | None):
        self.log_dir = log_dir
        self.interval = interval
        self.writer = None
        self._sums: dict = {}
        self._count = 0
        self._seen_iter: int | None = None

    @hookimpl
    def detcore_before_run(self, runner) -> None:
        if not runner.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            from detcore_hooks.plugin import TENSORBOARD_HINT

            raise DetcoreError(
                f"the 'tensorboard' hook could not import torch.utils.tensorboard ({exc}); "
                f"install the extra with: {TENSORBOARD_HINT}"
            ) from None
        log_dir = Path(self.log_dir) if self.log_dir else Path(runner.work_dir) / "tensorboard"
        if not log_dir.is_absolute() and self.log_dir:
            log_dir = Path(runner.work_dir) / log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))
        if self.interval is None:
            self.interval = runner.cfg.train.log_interval
        self._seen_iter = runner.iter
        runner.logger.info("tensorboard: writing event files to %s", log_dir)

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration: int, losses: dict) -> None:
        if self.writer is None:
            return
        # Sum the detached 0-d tensors on the device: no sync until written.
        for k, v in losses.items():
            self._sums[k] = self._sums[k] + v if k in self._sums else v.detach().clone()
        self._count += 1
        if runner.iter == self._seen_iter:
            return  # micro-batch without an optimizer step
        self._seen_iter = runner.iter
        if runner.iter % self.interval == 0 or runner.iter == runner.max_iters:
            self._flush_train(runner)

    def _flush_train(self, runner) -> None:
        if not self._count:
            return
        step = runner.iter
        for k, total in self._sums.items():
            self.writer.add_scalar(f"train/{k}", float(total) / self._count, step)
        lrs = [g["lr"] for g in runner.optimizer.param_groups]
        self.writer.add_scalar("train/lr", max(lrs), step)
        if len(set(lrs)) > 1:
            for i, lr in enumerate(lrs):
                self.writer.add_scalar(f"train/lr_group{i}", lr, step)
        self._sums, self._count = {}, 0

    @hookimpl
    def detcore_after_val_epoch(self, runner, metrics: dict) -> None:
        if self.writer is None:
            return
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", float(v), runner.iter)
        self.writer.flush()

    @hookimpl
    def detcore_after_run(self, runner) -> None:
        if self.writer is None:
            return
        self._flush_train(runner)
        self.writer.close()
        self.writer = None
