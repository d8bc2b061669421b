"""``check_finite``: fail as soon as a parameter or gradient is NaN/inf.

The runner already stops on a non-finite *loss*. This hook catches what
the loss does not show yet: an optimizer step that wrote NaN/inf into the
weights (a finite loss, an infinite gradient, no clipping), which the next
checkpoint and the EMA would otherwise keep.
"""

from __future__ import annotations

import torch

from detcore import hookimpl
from detcore.errors import DetcoreError

# How many offending tensors the error names.
_SHOWN = 5


class NonFiniteError(DetcoreError):
    """Parameters or gradients became NaN/inf."""


class CheckFiniteHook:
    """See :func:`detcore_hooks.plugin.check_finite`."""

    name = "check_finite"

    def __init__(self, *, interval: int, check_grads: bool):
        self.interval = interval
        self.check_grads = check_grads
        self._seen_iter: int | None = None
        self._named: list[tuple[str, torch.nn.Parameter]] = []

    @hookimpl
    def detcore_before_run(self, runner) -> None:
        self._seen_iter = runner.iter
        self._named = list(runner.model.named_parameters())
        # fp16 with a GradScaler produces infinite gradients by design (the
        # scaler then skips the step); only the weights are checked there.
        if runner.cfg.train.amp == "fp16":
            self.check_grads = False

    @staticmethod
    def _all_finite(tensors: list[torch.Tensor]) -> bool:
        if not tensors:
            return True
        # One fused reduction and one host sync for the whole model: the
        # norm of a tensor is finite iff every element is.
        norms = torch._foreach_norm([t.detach() for t in tensors])
        device = norms[0].device
        return bool(torch.isfinite(torch.stack([n.to(device) for n in norms])).all())

    # tryfirst: check before other after_train_iter hooks (ema) consume the
    # step's weights.
    @hookimpl(tryfirst=True)
    def detcore_after_train_iter(self, runner, iteration: int, losses: dict) -> None:
        if runner.iter == self._seen_iter:
            return  # micro-batch without an optimizer step
        self._seen_iter = runner.iter
        if runner.iter % self.interval:
            return
        params = [p for _, p in self._named]
        grads = [p.grad for _, p in self._named if p.grad is not None] if self.check_grads else []
        if self._all_finite(params) and self._all_finite(grads):
            return
        bad = [f"{n} (weights)" for n, p in self._named if not bool(torch.isfinite(p).all())]
        if self.check_grads:
            bad += [
                f"{n} (gradient)"
                for n, p in self._named
                if p.grad is not None and not bool(torch.isfinite(p.grad).all())
            ]
        if not bad:
            return  # a finite tensor whose norm overflowed
        shown = ", ".join(bad[:_SHOWN]) + (f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
        raise NonFiniteError(
            f"check_finite: after optimizer step {runner.iter} (epoch {runner.epoch + 1}) "
            f"{len(bad)} tensor(s) hold NaN/inf: {shown}. The last checkpoint before this step is "
            f"intact; lower optimizer.lr, set train.grad_clip, or use train.amp = \"bf16\" "
            f"instead of fp16, then resume from it."
        )
