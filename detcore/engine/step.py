"""One training step, as Detectron2's ``run_step`` or torchvision's
``train_one_epoch`` body: forward under autocast, a finiteness check every
rank agrees on, backward (loss-scaled for fp16), and, once per group of
accumulated micro-batches, gradient clipping, the optimizer step and the LR
step.
"""

from __future__ import annotations

import contextlib
import math

from detcore.engine import dist
from detcore.engine.amp import autocast

__all__ = ["NonFiniteLoss", "TrainStep", "accumulation_group"]


class NonFiniteLoss(Exception):
    """The loss of a micro-batch is NaN or infinite on some rank (no
    backward pass ran). ``here``: on this rank (else only on another)."""

    def __init__(self, losses: dict, here: bool):
        super().__init__("non-finite loss")
        self.losses = losses
        self.here = here


def accumulation_group(batch: int, start: int, accumulate: int, n_batches: int) -> tuple[int, bool]:
    """``(group size, last of its group)`` for batch index ``batch`` of an
    epoch of ``n_batches`` whose pass began at batch ``start``.

    Groups of ``accumulate`` micro-batches count from ``start`` (a resumed
    pass starts at a group boundary: the position is saved after a step);
    the epoch's last group may be shorter, and its loss is divided by its
    own size so every step averages the micro-batches it saw.
    """
    group_start = start + (batch - start) // accumulate * accumulate
    size = min(accumulate, n_batches - group_start)
    return size, batch - group_start == size - 1


class TrainStep:
    """Forward/backward of micro-batches and the optimizer step.

    ``train_model`` is what runs the forward pass (the DDP wrapper when
    there is one: its gradient all-reduce is skipped with ``no_sync`` on
    micro-batches that do not end a group). ``grad_norm`` holds the last
    clipped step's total gradient norm (``None`` without ``grad_clip``).
    """

    def __init__(self, train_model, optimizer, lr_scheduler, scaler, *, amp: str | None, device,
                 grad_clip: float | None, ddp: bool):
        self.train_model = train_model
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.scaler = scaler
        self.amp = amp
        self.device = device
        self.grad_clip = grad_clip
        self.ddp = ddp
        self.grad_norm = None
        self._clip_params: list | None = None

    def forward_backward(self, images, targets, *, group_size: int, sync: bool) -> dict:
        """Run one micro-batch; ``{loss name: detached 0-d tensor}`` plus
        ``"loss"`` (the total). ``sync``: this micro-batch ends its group
        (DDP all-reduces its gradients). Raises :class:`NonFiniteLoss`
        before the backward pass when any rank's loss is not finite."""
        ctx = self.train_model.no_sync() if self.ddp and not sync else contextlib.nullcontext()
        with ctx:
            with autocast(self.amp, self.device):
                losses = self.train_model(images, targets)
            total = sum(losses.values())
            value = float(total.detach())
            # Every rank stops together: a rank left running would wait
            # forever in DDP's gradient all-reduce.
            if dist.any_rank(not math.isfinite(value)):
                raise NonFiniteLoss(losses, here=not math.isfinite(value))
            loss = total / group_size
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
        detached = {k: v.detach() for k, v in losses.items()}
        detached["loss"] = total.detach()
        return detached

    def optimizer_step(self, iteration: int) -> None:
        """Apply the accumulated gradients as step ``iteration`` (0-based):
        LR for this step, unscale + clip, optimizer (through the scaler for
        fp16), zero the gradients."""
        import torch

        self.lr_scheduler.set_iter(iteration)
        if self.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self._clip_params is None:  # clip_grad_norm_ skips params without a grad
                self._clip_params = [p for g in self.optimizer.param_groups for p in g["params"]]
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self._clip_params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
