"""The training log line: losses and timings averaged over the iterations
since the last line (over every rank in distributed runs), the LR, ETA and
peak memory; written to the log and to ``scalars.jsonl``."""

from __future__ import annotations

import time

__all__ = ["TrainLog", "current_lr", "fmt_time"]


def fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}d " if d else "") + f"{h}:{m:02d}:{s:02d}"


def current_lr(optimizer) -> float:
    """The lr to show: the first parameter group without an lr multiplier."""
    groups = optimizer.param_groups
    return next((g["lr"] for g in groups if g.get("lr_mult", 1.0) == 1.0), groups[0]["lr"])


class TrainLog:
    """Accumulates micro-batch losses and times; :meth:`flush` writes one
    line. Losses stay on the device until the line is written (no sync per
    iteration)."""

    def __init__(self, start_iter: int, scalars) -> None:
        self.scalars = scalars  # the run's ScalarWriter
        self.t_start = time.perf_counter()
        self.iters_at_start = start_iter
        self._reset()

    def _reset(self) -> None:
        self.losses: dict = {}
        self.n = 0
        self.time = 0.0
        self.data_time = 0.0

    def add(self, losses: dict, *, time: float, data_time: float) -> None:
        for k, v in losses.items():
            self.losses[k] = self.losses.get(k, 0) + v.float()
        self.n += 1
        self.time += time
        self.data_time += data_time

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def flush(self, runner, *, grad_norm=None, extra: dict | None = None) -> dict:
        """Average the window, log it (rank 0) and start a new one; the record."""
        import torch

        from detcore.engine.logger import ITERATION_LINE

        n = max(self.n, 1)
        window = self.losses
        if runner.world_size > 1 and window:
            # The global batch's losses (as MMDetection logs them): every
            # rank logs at the same iterations, with the same loss names.
            import torch.distributed as tdist

            keys = sorted(window)
            device = runner.device if tdist.get_backend() == "nccl" else "cpu"
            t = torch.stack([window[k].reshape(()).float() for k in keys]).to(device)
            tdist.all_reduce(t)
            window = dict(zip(keys, (t / runner.world_size).unbind()))
        values = {k: float(v) / n for k, v in window.items()}
        lr = current_lr(runner.optimizer)
        iter_time = self.time / n
        done = runner.iter - self.iters_at_start
        eta = self.elapsed() / max(done, 1) * (runner.max_iters - runner.iter)
        if runner.device.type == "cuda":
            mem = torch.cuda.max_memory_allocated(runner.device) / 2**20
        else:
            import resource

            mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        record = {
            "mode": "train",
            "epoch": runner.epoch + 1,
            "iter": runner.iter,
            "lr": lr,
            **values,
            "data_time": self.data_time / n,
            "time": iter_time,
            "eta_s": eta,
            "memory_mb": round(mem, 1),
        }
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        record.update(extra or {})
        self._reset()
        if runner.is_main:
            self.scalars.write(record)
            terms = " ".join(f"{k} {v:.4f}" for k, v in values.items() if k != "loss")
            epoch = f"epoch {runner.epoch + 1}/{runner.max_epochs} " if runner.max_epochs else ""
            runner.logger.info(
                "%siter %d/%d lr %.3g loss %.4f (%s) time %.3fs data %.3fs eta %s mem %.0fMB",
                epoch, runner.iter, runner.max_iters, lr, values.get("loss", float("nan")), terms,
                iter_time, record["data_time"], fmt_time(eta), mem,
                extra=ITERATION_LINE,  # a progress bar shows it instead, on the console
            )
        return record
