"""``progress``: a tqdm bar on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import datetime
import math
import os
import sys
import time

from detcore import hookimpl
from detcore.errors import DetcoreError

# How often (seconds) the bar's loss / lr / ETA are refreshed: reading a loss
# forces a device sync, so not every iteration.
_BAR_REFRESH_S = 0.5


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(datetime.timedelta(seconds=int(seconds)))


def _lr(runner) -> float:
    return max(g["lr"] for g in runner.optimizer.param_groups)


class ProgressHook:
    """See :func:`detcore_hooks.plugin.progress`."""

    name = "progress"

    def __init__(self, *, interval: int, mode: str, stream=None):
        self.interval = interval
        self.mode = mode
        self.stream = stream
        self.enabled = False
        self.bar_mode = False
        self._bar = None
        self._val_bar = None
        self._redirect = None
        self._t0 = 0.0
        self._iter0 = 0
        self._last_refresh = 0.0
        self._seen_iter: int | None = None
        self._val_done = 0
        self._val_total = 0
        # The epoch last trained (0-based): the runner has already advanced
        # runner.epoch when it validates at the end of an epoch.
        self._epoch = 0

    # -- helpers ----------------------------------------------------------

    @property
    def out(self):
        return self.stream if self.stream is not None else sys.stdout

    def _bar_size(self) -> dict:
        """tqdm's size arguments: follow the terminal, or 100 x 20 where it
        reports a size of 0 x 0 (a pty nobody sized), in which tqdm draws
        nothing."""
        try:
            cols = os.get_terminal_size(self.out.fileno()).columns
        except (AttributeError, OSError, ValueError):
            cols = 0
        return {"dynamic_ncols": True} if cols > 0 else {"ncols": 100, "nrows": 20}

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _eta(self, runner) -> str:
        done = runner.iter - self._iter0
        if done <= 0 or not runner.max_iters:
            return "?"
        per_iter = (time.perf_counter() - self._t0) / done
        return _fmt_eta(per_iter * (runner.max_iters - runner.iter))

    def _epoch_label(self, runner, epoch: int) -> str:
        if runner.max_epochs:
            return f"epoch {epoch + 1}/{runner.max_epochs}"
        return f"epoch {epoch + 1}"

    def _val_batches(self, runner) -> int:
        data = runner.cfg.data
        bs = data.val_batch_size or data.batch_size
        n = len(runner.val_dataset) if runner.val_dataset is not None else 0
        return math.ceil(math.ceil(n / max(runner.world_size, 1)) / bs)

    # -- hooks ------------------------------------------------------------

    @hookimpl
    def detcore_before_run(self, runner) -> None:
        self.enabled = bool(runner.is_main)
        if not self.enabled:
            return
        tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.bar_mode = self.mode == "bar" or (self.mode == "auto" and tty)
        if self.bar_mode:
            try:
                from tqdm.contrib.logging import logging_redirect_tqdm
            except ImportError:
                raise DetcoreError(
                    "the 'progress' hook draws its bar with tqdm, which is not installed: "
                    "pip install 'detcore-hooks[progress]' (or set mode = \"lines\")"
                ) from None
            # Route the runner's console log lines through tqdm.write so they
            # do not break the bar.
            loggers, lg = [], runner.logger
            while lg is not None:
                loggers.append(lg)
                lg = lg.parent if lg.propagate else None
            self._redirect = logging_redirect_tqdm(loggers=loggers)
            self._redirect.__enter__()
        self._t0 = time.perf_counter()
        self._iter0 = self._seen_iter = runner.iter

    @hookimpl
    def detcore_before_train_epoch(self, runner, epoch: int) -> None:
        self._epoch = epoch
        if not (self.enabled and self.bar_mode):
            return
        from tqdm import tqdm

        total = len(runner.train_loader)
        if not runner.max_epochs and runner.max_iters:
            accumulate = runner.cfg.train.accumulate
            total = min(total, (runner.max_iters - runner.iter) * accumulate)
        self._close(train=True)
        self._bar = tqdm(
            total=total,
            desc=self._epoch_label(runner, epoch),
            file=self.out,
            leave=False,
            unit="it",
            **self._bar_size(),
        )

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration: int, losses: dict) -> None:
        if not self.enabled:
            return
        if self.bar_mode:
            if self._bar is None:
                return
            self._bar.update(1)
            now = time.perf_counter()
            if now - self._last_refresh >= _BAR_REFRESH_S:
                self._last_refresh = now
                self._bar.set_postfix_str(
                    f"loss {float(losses['loss']):.4f} lr {_lr(runner):.3g} eta {self._eta(runner)}",
                    refresh=False,
                )
            return
        if runner.iter == self._seen_iter:
            return  # micro-batch without an optimizer step
        self._seen_iter = runner.iter
        if runner.iter % self.interval and runner.iter != runner.max_iters:
            return
        terms = " ".join(f"{k} {float(v):.4f}" for k, v in losses.items() if k != "loss")
        total = f"/{runner.max_iters}" if runner.max_iters else ""
        self._print(
            f"{self._epoch_label(runner, self._epoch)} iter {runner.iter}{total} "
            f"loss {float(losses['loss']):.4f} ({terms}) lr {_lr(runner):.3g} "
            f"eta {self._eta(runner)}"
        )

    @hookimpl
    def detcore_after_train_epoch(self, runner, epoch: int) -> None:
        self._close(train=True)

    @hookimpl
    def detcore_before_val_epoch(self, runner) -> None:
        if not self.enabled:
            return
        self._val_done, self._val_total = 0, self._val_batches(runner)
        if self.bar_mode:
            from tqdm import tqdm

            self._val_bar = tqdm(
                total=self._val_total, desc="val", file=self.out, leave=False, unit="batch", **self._bar_size()
            )

    @hookimpl
    def detcore_after_val_iter(self, runner, batch, outputs: list) -> None:
        if not self.enabled:
            return
        self._val_done += 1
        if self._val_bar is not None:
            self._val_bar.update(1)
        elif not self.bar_mode and (self._val_done % self.interval == 0 or self._val_done == self._val_total):
            self._print(f"val batch {self._val_done}/{self._val_total}")

    @hookimpl
    def detcore_after_val_epoch(self, runner, metrics: dict) -> None:
        if not self.enabled:
            return
        self._close(train=False)
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        line = f"{self._epoch_label(runner, self._epoch)} val: {shown or '(no metrics)'}"
        if self.bar_mode:
            from tqdm import tqdm

            tqdm.write(line, file=self.out)
        else:
            self._print(line)

    @hookimpl
    def detcore_after_run(self, runner) -> None:
        if not self.enabled:
            return
        self._close(train=True)
        self._close(train=False)
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        elapsed = _fmt_eta(time.perf_counter() - self._t0)
        self._print(f"training finished at iteration {runner.iter} in {elapsed}")

    def _close(self, *, train: bool) -> None:
        attr = "_bar" if train else "_val_bar"
        bar = getattr(self, attr)
        if bar is not None:
            bar.close()
            setattr(self, attr, None)

