"""The runner's parts on their own: the accumulation grouping, the one
schedule rule, and the step object against a plain PyTorch step."""

from __future__ import annotations

import pytest
import torch

from detcore.engine.schedule import Due, Schedule
from detcore.engine.step import NonFiniteLoss, TrainStep, accumulation_group


def test_accumulation_groups_count_from_the_start_and_the_last_is_shorter():
    # 7 batches, accumulate 3: groups [0,1,2] [3,4,5] [6]
    got = [accumulation_group(b, 0, 3, 7) for b in range(7)]
    assert got == [(3, False), (3, False), (3, True), (3, False), (3, False), (3, True), (1, True)]
    # a resumed pass starts at batch 3 (a group boundary)
    assert [accumulation_group(b, 3, 3, 7) for b in range(3, 7)] == [(3, False), (3, False), (3, True), (1, True)]
    assert all(accumulation_group(b, 0, 1, 4) == (1, True) for b in range(4))


def test_schedule_one_rule_for_iterations_epochs_and_the_end():
    it = Schedule(by_epoch=False, log_interval=2, val_interval=3, checkpoint_interval=4)
    assert it.after_step(2, last=False) == Due(log=True)
    assert it.after_step(3, last=False) == Due(validate=True)
    assert it.after_step(4, last=False) == Due(log=True, checkpoint=True)
    assert it.after_step(5, last=True) == Due(log=True, checkpoint=True)
    assert it.after_epoch(3, last=False) == Due()  # iteration runs ignore epoch ends
    ep = Schedule(by_epoch=True, log_interval=2, val_interval=2, checkpoint_interval=3)
    assert ep.after_step(4, last=True) == Due(log=True)  # epoch runs validate/save at epoch ends
    assert ep.after_epoch(2, last=False) == Due(validate=True)
    assert ep.after_epoch(3, last=False) == Due(checkpoint=True)
    assert ep.after_epoch(5, last=True) == Due(checkpoint=True)
    assert Schedule.at_end(10, validated_at=10, saved_at=8) == Due(checkpoint=True)
    assert Schedule.at_end(10, validated_at=7, saved_at=10) == Due(validate=True)


class _Regressor(torch.nn.Module):
    """A detector-shaped module: ``model(images, targets) -> {name: loss}``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 1)

    def forward(self, images, targets):
        x = torch.stack(images)
        y = torch.stack([t["y"] for t in targets])
        err = self.lin(x).squeeze(1) - y
        return {"loss_mse": (err**2).mean(), "loss_abs": err.abs().mean() * 0.1}


def _data():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, generator=g) for _ in range(6)], [{"y": torch.randn((), generator=g)} for _ in range(6)]


def _step(model, clip=None):
    from detcore.engine.lr_schedule import LRSchedule

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    sched = LRSchedule(opt, lambda i: 1.0)
    return opt, TrainStep(model, opt, sched, None, amp=None, device=torch.device("cpu"), grad_clip=clip, ddp=False)


def test_accumulated_step_equals_one_plain_step_on_the_mean_loss():
    images, targets = _data()
    # detcore: three micro-batches of 2, one optimizer step, clipped
    model = _Regressor()
    _, step = _step(model, clip=0.5)
    for b in range(3):
        size, last = accumulation_group(b, 0, 3, 3)
        losses = step.forward_backward(images[2 * b:2 * b + 2], targets[2 * b:2 * b + 2], group_size=size, sync=last)
        assert set(losses) == {"loss_mse", "loss_abs", "loss"}
    step.optimizer_step(0)
    # plain PyTorch: the mean of the three micro-batch losses, clip, step
    ref = _Regressor()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    total = sum(sum(ref(images[2 * b:2 * b + 2], targets[2 * b:2 * b + 2]).values()) for b in range(3)) / 3
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5)
    opt.step()
    assert torch.allclose(step.grad_norm, norm)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_a_non_finite_loss_stops_before_backward():
    images, targets = _data()
    targets[0]["y"] = torch.tensor(float("nan"))
    model = _Regressor()
    _, step = _step(model)
    with pytest.raises(NonFiniteLoss) as info:
        step.forward_backward(images[:2], targets[:2], group_size=1, sync=True)
    assert info.value.here and set(info.value.losses) == {"loss_mse", "loss_abs"}
    assert all(p.grad is None for p in model.parameters())
