"""``ema``: an exponential moving average of the weights, used for validation."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from detcore import hookimpl
from detcore.errors import CheckpointError


class ModelEMA:
    """A frozen copy of a module whose floating tensors follow the source
    module's by ``ema = lerp(ema, source, m)``.

    Not ``torch.optim.swa_utils.AveragedModel``: its step counter lives on the
    device and is read back with ``bool(n_averaged == 0)`` at every update,
    a host-device sync per iteration on GPUs. The counter here is a Python int.
    """

    def __init__(self, model: nn.Module, *, update_buffers: bool = False):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.update_buffers = update_buffers
        self.steps = 0
        self._pairs_of: tuple[int, tuple] | None = None

    def _pairs(self, model: nn.Module):
        """(averaged, copied) lists of (ema tensor, source tensor) pairs,
        worked out once per source model."""
        if self._pairs_of is None or self._pairs_of[0] != id(model):
            self._pairs_of = (id(model), self._match(model))
        return self._pairs_of[1]

    def _match(self, model: nn.Module):
        src = dict(model.named_parameters())
        avg, cpy = [], []
        for name, p in self.module.named_parameters():
            (avg if p.is_floating_point() else cpy).append((p, src[name]))
        src_buffers = dict(model.named_buffers())
        for name, b in self.module.named_buffers():
            if self.update_buffers and b.is_floating_point():
                avg.append((b, src_buffers[name]))
            else:
                cpy.append((b, src_buffers[name]))
        return avg, cpy, [e for e, _ in avg], [s.detach() for _, s in avg]

    @torch.no_grad()
    def update(self, model: nn.Module, momentum: float) -> None:
        avg, cpy, ema_t, src_t = self._pairs(model)
        if self.steps == 0 or momentum >= 1.0:
            for e, s in avg + cpy:
                e.copy_(s)
        else:
            torch._foreach_lerp_(ema_t, src_t, momentum)
            for e, s in cpy:
                e.copy_(s)
        self.steps += 1


class EMAHook:
    """See :func:`detcore_hooks.plugin.ema`."""

    name = "ema"

    def __init__(self, *, momentum: float, warmup_iters: int, interval: int, update_buffers: bool):
        self.momentum = momentum
        self.warmup_iters = warmup_iters
        self.interval = interval
        self.update_buffers = update_buffers
        self.ema: ModelEMA | None = None
        # The optimizer step the EMA last followed: with gradient
        # accumulation after_train_iter runs once per micro-batch.
        self._seen_iter: int | None = None
        self._pending_state: dict | None = None

    def momentum_at(self, step: int) -> float:
        """The interpolation weight of the update after ``step`` earlier ones."""
        if self.warmup_iters <= 0:
            return self.momentum
        return (1 - self.momentum) * math.exp(-(1 + step) / self.warmup_iters) + self.momentum

    def _ensure(self, runner) -> ModelEMA:
        if self.ema is None:
            self.ema = ModelEMA(runner.model, update_buffers=self.update_buffers)
        return self.ema

    @hookimpl
    def detcore_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get("hooks", {}).get(self.name)
        if state is None:
            runner.logger.warning(
                "ema: the checkpoint has no EMA state (it was trained without the ema hook); "
                "the EMA starts from the resumed weights"
            )
            return
        ema = self._ensure(runner)
        try:
            ema.module.load_state_dict(state["state_dict"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(
                f"ema: the EMA weights in the checkpoint do not fit the model ({exc}). Resume "
                f"with the run file the checkpoint was trained with."
            ) from None
        ema.steps = int(state["steps"])
        self._seen_iter = int(state.get("iter", runner.iter))

    @hookimpl
    def detcore_before_run(self, runner) -> None:
        self._ensure(runner)
        if self._seen_iter is None:
            self._seen_iter = runner.iter

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration: int, losses: dict) -> None:
        if runner.iter == self._seen_iter:
            return  # a micro-batch without an optimizer step
        self._seen_iter = runner.iter
        if runner.iter % self.interval:
            return
        ema = self._ensure(runner)
        ema.update(runner.model, self.momentum_at(ema.steps))

    @hookimpl
    def detcore_val_model(self, runner):
        return self._ensure(runner).module

    @hookimpl
    def detcore_save_checkpoint(self, runner, checkpoint: dict) -> None:
        ema = self._ensure(runner)
        checkpoint.setdefault("hooks", {})[self.name] = {
            "state_dict": ema.module.state_dict(),
            "steps": ema.steps,
            "iter": self._seen_iter if self._seen_iter is not None else runner.iter,
        }
