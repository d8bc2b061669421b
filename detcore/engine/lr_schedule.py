"""Learning-rate schedules: warmup (linear or constant) times a main schedule
(constant, step, multistep, cosine, poly, flat_cosine), as a pure function of
the iteration (so a resumed run gets the same LRs).

All schedules are computed per optimizer step. ``by_epoch`` milestones and
step sizes are converted to iterations (``epoch * iters_per_epoch``), so an
epoch-based schedule changes the LR exactly at epoch boundaries. Cosine and
poly decay smoothly over all ``max_iters`` iterations. ``flat_cosine``
(DEIM's FlatCosineLRScheduler) keeps the base LR until ``flat_until``
and then decays it on a half cosine to ``min_lr_ratio`` at ``decay_until``
(default ``max_iters``), staying there after.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from detcore.errors import RunFileError

__all__ = ["LRSchedule", "lr_factor_fn"]


def lr_factor_fn(cfg, max_iters: int, iters_per_epoch: int,
                 stretch: Callable[[], float] | None = None) -> Callable[[int], float]:
    """``factor(it)``: the multiplier of the base LR at 0-based iteration ``it``
    for an :class:`LRScheduleConfig` ``cfg``. ``stretch()`` (``train.max_time``
    with ``stretch_schedule``) is how many times longer the run now is than
    ``max_iters``: the schedule after warmup is stretched by it (milestones,
    step sizes and the cosine/poly length alike); warmup is not."""
    unit = iters_per_epoch if cfg.by_epoch else 1
    milestones = [m * unit for m in cfg.milestones]
    step = (cfg.step_size or 1) * unit
    total = max(int(max_iters), 1)
    floor = cfg.min_lr_ratio
    flat_end = (cfg.flat_until or 0) * unit
    decay_end = total if cfg.decay_until is None else cfg.decay_until * unit
    if cfg.type == "flat_cosine":
        # An epoch point in an iteration-based run is only checkable here,
        # where the loader's length is known.
        units = "epochs" if cfg.by_epoch else "iterations"
        if cfg.decay_until is not None and decay_end >= total:
            raise RunFileError(
                f"decay_until = {cfg.decay_until} {units} ({decay_end} iterations) is not before the end of "
                f"training ({total} iterations); make it smaller, or leave it out to decay until the end",
                key="lr_schedule.decay_until")
        if flat_end >= decay_end:
            raise RunFileError(
                f"flat_until = {cfg.flat_until} {units} ({flat_end} iterations) is not before the end of the "
                f"decay ({decay_end} iterations); make it smaller", key="lr_schedule.flat_until")

    def main(it: int) -> float:
        if cfg.type == "constant":
            return 1.0
        if cfg.type == "step":
            return cfg.gamma ** (it // step)
        if cfg.type == "multistep":
            return cfg.gamma ** sum(it >= m for m in milestones)
        if cfg.type == "flat_cosine":
            if it < flat_end:
                return 1.0
            progress = min((it - flat_end) / (decay_end - flat_end), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        progress = min(it / total, 1.0)
        if cfg.type == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.type == "poly":
            return floor + (1 - floor) * (1 - progress) ** cfg.power
        raise ValueError(f"unknown lr schedule {cfg.type!r}")

    def factor(it: int) -> float:
        f = main(it if stretch is None else it / stretch())
        if cfg.warmup != "none" and it < cfg.warmup_iters:
            if cfg.warmup == "linear":
                f *= cfg.warmup_ratio + (1 - cfg.warmup_ratio) * it / cfg.warmup_iters
            else:
                f *= cfg.warmup_ratio
        return f

    return factor


class LRSchedule:
    """Sets every param group's ``lr`` to ``initial_lr * factor(it)``.

    The runner calls :meth:`set_iter` before each optimizer step; the state
    (base LRs and the iteration) is plain numbers, so it checkpoints under
    ``weights_only``. ``get_last_lr()`` as torch's schedulers."""

    def __init__(self, optimizer, factor: Callable[[int], float]):
        self.optimizer = optimizer
        self.factor = factor
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_iter = -1
        self.set_iter(0)

    def set_iter(self, it: int) -> None:
        f = self.factor(it)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * f
        self.last_iter = it

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"base_lrs": list(self.base_lrs), "last_iter": self.last_iter}

    def load_state_dict(self, state: dict) -> None:
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = base
        self.set_iter(int(state["last_iter"]))
