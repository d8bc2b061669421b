"""Unit-level checks of the hooks' arithmetic and of pluggy's call order on
real modules and a real plugin manager (the training runs are in the other
test_hooks_* files)."""

from __future__ import annotations

import math

import pytest
import torch
from detcore_hooks.ema import EMAHook, ModelEMA
from detcore_hooks.plugin import (
    check_finite,
    early_stopping,
    ema,
    profiler,
    tensorboard,
    visualize,
)
from torch import nn

from detcore.engine.progress import Progress
from detcore.plugins import DetcorePluginManager


def test_ema_momentum_warmup_matches_mmdetection():
    hook = ema(momentum=0.0002, warmup_iters=2000)
    # ExpMomentumEMA: (1 - m) * exp(-(1 + step) / gamma) + m
    for step in (0, 10, 1999, 20000):
        expected = (1 - 0.0002) * math.exp(-(1 + step) / 2000) + 0.0002
        assert hook.momentum_at(step) == pytest.approx(expected)
    assert ema(momentum=0.01, warmup_iters=0).momentum_at(5) == 0.01


def test_model_ema_update_rule_and_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    avg = ModelEMA(model)
    assert not any(p.requires_grad for p in avg.module.parameters())
    avg.update(model, 0.5)  # the first update copies
    start = {k: v.clone() for k, v in avg.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 4))  # moves the BatchNorm statistics
    avg.update(model, 0.25)
    got = avg.module.state_dict()
    src = model.state_dict()
    for name, _ in model.named_parameters():
        torch.testing.assert_close(got[name], start[name] + 0.25 * (src[name] - start[name]))
    # Buffers are copied, not averaged (update_buffers = False).
    torch.testing.assert_close(got["1.running_mean"], src["1.running_mean"])
    assert int(got["1.num_batches_tracked"]) == 1
    assert avg.steps == 2


def test_ema_averages_float_buffers_when_asked():
    model = nn.BatchNorm1d(2)
    avg = ModelEMA(model, update_buffers=True)
    avg.update(model, 0.5)
    with torch.no_grad():
        model.running_mean.fill_(2.0)
    avg.update(model, 0.5)
    torch.testing.assert_close(avg.module.running_mean, torch.full((2,), 1.0))


def test_pluggy_order_of_the_hooks_markers():
    """check_finite (tryfirst) runs before ema, and profiler (trylast) after
    both, whatever order they are registered in; early_stopping reads the
    metrics last."""
    pm = DetcorePluginManager()
    hooks = [profiler(), ema(), check_finite(), early_stopping(metric="m")]
    for h in hooks:
        pm.register(h)
    # pluggy calls the implementations from the end of this list.
    called = [impl.plugin.name for impl in reversed(pm.hook.detcore_after_train_iter.get_hookimpls())]
    assert called == ["check_finite", "ema", "profiler"]
    for h in [early_stopping(metric="m2"), visualize(), Progress(), tensorboard()][::-1]:
        pm.register(h)
    called = [impl.plugin.name for impl in reversed(pm.hook.detcore_after_val_epoch.get_hookimpls())]
    assert called[-2:] == ["early_stopping", "early_stopping"]
    assert set(called[:-2]) == {"progress", "tensorboard", "visualize"}
    assert isinstance(pm.hook.detcore_val_model.get_hookimpls()[0].plugin, EMAHook)
