"""What training shows on the console while it runs: a progress bar on a
terminal, plain log lines elsewhere.

Every run has one :class:`Progress` (rank 0 draws; other ranks are quiet):
the runner registers it unless the run file configures its own with a
``[[hooks]] type = "progress"`` table (the ``progress`` runner hook, built in).

- On a terminal (``mode = "auto"`` and stdout is a TTY, or ``"bar"``): a tqdm
  bar per epoch with the loss, lr and the ETA of the whole run, and one per
  validation. The runner's iteration lines go to the log file only (the bar
  shows them); its other lines (checkpoints, validation results, warnings)
  are written above the bar.
- Elsewhere (a pipe, a file, a CI or Slurm log): the runner's iteration line
  every ``train.log_interval`` iterations, plus a line after the first
  iteration (a long first epoch shows something at once), a line every
  ``interval`` iterations when set, and validation progress lines. Never two
  lines for the same iteration.
"""

from __future__ import annotations

import math
import os
import sys
import time

from detcore import hookimpl

__all__ = ["EvalProgress", "Progress", "tqdm_installed"]

# How often (seconds) the bar's loss / lr / ETA are refreshed: reading a loss
# forces a device sync, so not every iteration.
_BAR_REFRESH_S = 0.5


def _lr(runner) -> float:
    from detcore.engine.train_log import current_lr

    return current_lr(runner.optimizer)


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    from detcore.engine.train_log import fmt_time

    return fmt_time(seconds)


def bar_size(stream) -> dict:
    """tqdm's size arguments: follow the terminal, or 100 x 20 where it
    reports a size of 0 x 0 (a pty nobody sized), in which tqdm draws
    nothing."""
    try:
        cols = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        cols = 0
    return {"dynamic_ncols": True} if cols > 0 else {"ncols": 100, "nrows": 20}


class EvalProgress:
    """The progress of one evaluation pass over ``total`` batches: a tqdm bar
    (``bar=True``; cleared when done, so the results print where it was) or
    a line ``"<label> batch k/N eta T"`` through ``say`` after the first
    batch and every ``every`` batches. Training's validation and ``detcore
    test`` both show it."""

    def __init__(self, total: int, *, label: str, bar: bool, say, every: int = 1, stream=None):
        stream = sys.stdout if stream is None else stream
        self.total, self.label, self.say, self.every = total, label, say, max(1, every)
        self.done = 0
        self._t0 = time.perf_counter()
        self._bar = None
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=label, file=stream, leave=False, unit="batch", **bar_size(stream)
            )

    def update(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
            if self.done >= self.total:
                self._bar.refresh()  # show 100% (tqdm draws at most every 0.1 s) ...
                self.close()  # ... then clear it before the results are printed
        elif self.done == 1 or self.done % self.every == 0:
            per = (time.perf_counter() - self._t0) / self.done
            self.say(f"{self.label} batch {self.done}/{self.total} eta {_fmt_eta(per * (self.total - self.done))}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def tqdm_installed() -> bool:
    """tqdm draws the bars: a core dependency, but an environment may lack it."""
    import importlib.util

    return importlib.util.find_spec("tqdm") is not None


class Progress:
    """The console of a training run (see the module docstring).

    ``interval``: in line mode, also print every ``interval`` iterations
    (and validation batches); ``None``: only the runner's
    ``train.log_interval`` lines (validation progress every
    ``log_interval`` batches). ``mode``: ``"auto"``, ``"bar"`` or
    ``"lines"``. ``stream``: where the bar goes (default stdout).
    """

    name = "progress"

    def __init__(self, *, interval: int | None = None, mode: str = "auto", stream=None):
        self.interval = interval
        self.mode = mode
        self.stream = stream
        self.enabled = False
        self.bar_mode = False
        self._console = None  # the runner's ConsoleHandler
        self._bar = None
        self._val: EvalProgress | None = None
        self._t0 = 0.0
        self._iter0 = 0
        self._last_refresh = 0.0
        self._seen_iter: int | None = None
        self._log_interval = 1
        self._epoch = 0

    @property
    def out(self):
        return self.stream if self.stream is not None else sys.stdout

    def _eta(self, runner) -> str:
        done = runner.iter - self._iter0
        if done <= 0 or not runner.max_iters:
            return "?"
        per_iter = (time.perf_counter() - self._t0) / done
        return _fmt_eta(per_iter * (runner.max_iters - runner.iter))

    def _epoch_label(self, runner, epoch: int) -> str:
        return f"epoch {epoch + 1}/{runner.max_epochs}" if runner.max_epochs else f"epoch {epoch + 1}"

    def _val_batches(self, runner) -> int:
        from detcore.data.samplers import shard_batches

        data = runner.cfg.data
        n = len(runner.val_dataset) if runner.val_dataset is not None else 0
        return shard_batches(n, runner.world_size, data.val_batch_size or data.batch_size)

    def _say(self, runner, line: str) -> None:
        """A line through the run's logger: timestamped, on the console
        (above the bar) and in the log file."""
        runner.logger.info("%s", line)

    # -- hooks ------------------------------------------------------------

    @hookimpl
    def detcore_before_run(self, runner) -> None:
        from detcore.engine.logger import console_handler

        self.enabled = bool(runner.is_main)
        if not self.enabled:
            return
        self._console = console_handler(runner.logger)
        tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.bar_mode = self.mode == "bar" or (self.mode == "auto" and tty)
        if self.bar_mode and not tqdm_installed():
            runner.logger.warning("tqdm is not installed: no progress bar (pip install tqdm)")
            self.bar_mode = False
        if self.bar_mode and self._console is not None:
            # The bar shows the iteration lines; the log file keeps them.
            self._console.use_tqdm(hide_iteration_lines=True)
        self._log_interval = runner.cfg.train.log_interval
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
            total = min(total, (runner.max_iters - runner.iter) * runner.cfg.train.accumulate)
        self._close(train=True)
        self._bar = tqdm(
            # Each finished epoch stays on screen: its last loss, lr and ETA.
            total=total, desc=self._epoch_label(runner, epoch), file=self.out, leave=True, unit="it",
            **bar_size(self.out),
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
            # Every epoch's bar gets its numbers at its first step, whatever
            # the time since the previous bar was refreshed.
            first = self._bar.n == 1
            if first or now - self._last_refresh >= _BAR_REFRESH_S:
                self._last_refresh = now
                self._bar.set_postfix_str(
                    f"loss {float(losses['loss']):.4f} lr {_lr(runner):.3g} eta {self._eta(runner)}", refresh=first,
                )
            return
        if runner.iter == self._seen_iter:
            return  # a micro-batch without an optimizer step
        self._seen_iter = runner.iter
        it = runner.iter
        if it % self._log_interval == 0 or it == runner.max_iters:
            return  # the runner logs this iteration itself
        first = it == self._iter0 + 1
        if not (first or (self.interval and it % self.interval == 0)):
            return
        terms = " ".join(f"{k} {float(v):.4f}" for k, v in losses.items() if k != "loss")
        total = f"/{runner.max_iters}" if runner.max_iters else ""
        prefix = f"{self._epoch_label(runner, self._epoch)} " if runner.max_epochs else ""
        line = (
            f"{prefix}iter {it}{total} lr {_lr(runner):.3g} loss {float(losses['loss']):.4f} ({terms}) "
            f"eta {self._eta(runner)}"
        )
        if first and self._log_interval > 1:
            line += f" (then every {self._log_interval} iterations)"
        self._say(runner, line)

    @hookimpl
    def detcore_after_train_epoch(self, runner, epoch: int) -> None:
        self._close(train=True)

    @hookimpl
    def detcore_before_val_epoch(self, runner) -> None:
        if not self.enabled:
            return
        self._val = EvalProgress(
            self._val_batches(runner), label="val", bar=self.bar_mode, say=lambda line: self._say(runner, line),
            every=self.interval or self._log_interval, stream=self.out,
        )

    @hookimpl
    def detcore_after_val_iter(self, runner, batch, outputs: list) -> None:
        if self._val is not None:
            self._val.update()

    @hookimpl
    def detcore_after_val_epoch(self, runner, metrics: dict) -> None:
        if self.enabled:
            self._close(train=False)

    @hookimpl
    def detcore_after_run(self, runner) -> None:
        if not self.enabled:
            return
        self._close(train=True)
        self._close(train=False)
        if self._console is not None:
            self._console.use_tqdm(False)

    def _close(self, *, train: bool) -> None:
        """Close the epoch's bar (``train``) or the validation's progress."""
        attr = "_bar" if train else "_val"
        shown = getattr(self, attr)
        if shown is not None:
            shown.close()
            setattr(self, attr, None)
