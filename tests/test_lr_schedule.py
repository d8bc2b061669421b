"""LR schedule values at chosen iterations, and the auto-scale-lr rule."""

from __future__ import annotations

import math

import pytest
import torch

from detcore.engine.lr_schedule import LRSchedule, lr_factor_fn
from detcore.engine.optim import scaled_lr
from detcore.runfile.schema import LRScheduleConfig


def lrs(cfg, max_iters, ipe, its, base=0.02):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = LRSchedule(opt, lr_factor_fn(cfg, max_iters, ipe))
    out = []
    for it in its:
        sched.set_iter(it)
        out.append(sched.get_last_lr()[0])
    return out


def test_linear_warmup_then_multistep_by_epoch():
    # MMDetection's 1x schedule shape: 12 epochs, steps at 8 and 11, 500 warmup iters.
    cfg = LRScheduleConfig(type="multistep", milestones=[8, 11], warmup="linear", warmup_iters=500, warmup_ratio=0.001)
    ipe = 1000
    got = lrs(cfg, 12 * ipe, ipe, [0, 250, 499, 500, 7999, 8000, 10999, 11000, 11999])
    want = [
        0.02 * 0.001,
        0.02 * (0.001 + 0.999 * 250 / 500),
        0.02 * (0.001 + 0.999 * 499 / 500),
        0.02,
        0.02,
        0.002,
        0.002,
        0.0002,
        0.0002,
    ]
    assert got == pytest.approx(want, rel=1e-12)


def test_multistep_by_iteration_and_constant_warmup():
    cfg = LRScheduleConfig(type="multistep", by_epoch=False, milestones=[30, 60], gamma=0.5, warmup="constant", warmup_iters=10, warmup_ratio=0.1)
    assert lrs(cfg, 100, 7, [0, 9, 10, 29, 30, 59, 60], base=1.0) == pytest.approx([0.1, 0.1, 1, 1, 0.5, 0.5, 0.25])


def test_cosine_with_warmup_and_floor():
    cfg = LRScheduleConfig(type="cosine", warmup="linear", warmup_iters=10, warmup_ratio=0.1, min_lr_ratio=0.05)
    got = lrs(cfg, 100, 10, [0, 5, 10, 50, 75, 100], base=1.0)
    cos = lambda t: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t / 100))  # noqa: E731
    want = [cos(0) * 0.1, cos(5) * (0.1 + 0.9 * 0.5), cos(10), cos(50), cos(75), 0.05]
    assert got == pytest.approx(want, rel=1e-12)
    assert got[3] == pytest.approx(0.525)


def test_step_and_poly():
    step = LRScheduleConfig(type="step", step_size=3, gamma=0.1, warmup="none")
    assert lrs(step, 90, 10, [0, 29, 30, 60], base=1.0) == pytest.approx([1, 1, 0.1, 0.01])
    poly = LRScheduleConfig(type="poly", power=2.0, warmup="none")
    assert lrs(poly, 100, 10, [0, 50, 100], base=1.0) == pytest.approx([1, 0.25, 0])


def test_state_round_trip_keeps_lr():
    cfg = LRScheduleConfig(type="cosine", warmup_iters=0)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "lr": 0.1}], lr=0.1)
    sched = LRSchedule(opt, lr_factor_fn(cfg, 10, 1))
    sched.set_iter(4)
    state = sched.state_dict()
    opt2 = torch.optim.SGD([{"params": [p], "lr": 0.1}], lr=0.1)
    sched2 = LRSchedule(opt2, lr_factor_fn(cfg, 10, 1))
    sched2.load_state_dict(state)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_auto_scale_lr_arithmetic():
    # lr 0.01 tuned for 4 GPUs x 2 images (base 8) -> 16 GPUs x 4 images.
    assert scaled_lr(0.01, batch_size=4, world_size=16, base_batch_size=8) == pytest.approx(0.08)
    assert scaled_lr(0.02, batch_size=2, world_size=8, base_batch_size=16) == pytest.approx(0.02)
    assert scaled_lr(0.02, batch_size=2, world_size=1, base_batch_size=16, accumulate=4) == pytest.approx(0.01)


def test_schema_rejects_bad_schedules():
    from detcore.errors import ConfigCheckError

    with pytest.raises(ConfigCheckError, match="step_size"):
        LRScheduleConfig(type="step")
    with pytest.raises(ConfigCheckError, match="increasing"):
        LRScheduleConfig(type="multistep", milestones=[8, 3])
