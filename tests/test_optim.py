"""Optimizer parameter-group rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detcore.engine.optim import build_optimizer, param_groups
from detcore.runfile.schema import OptimizerConfig


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
        self.neck = nn.Sequential(nn.Conv2d(4, 4, 1), nn.GroupNorm(2, 4))
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def groups_by_param(model, cfg):
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in param_groups(model, cfg):
        for p in g["params"]:
            out[names[id(p)]] = (g["weight_decay"], g["lr_mult"])
    return out


def test_default_rules_no_decay_on_norm_and_bias():
    m = Net()
    got = groups_by_param(m, OptimizerConfig(weight_decay=0.05, backbone_lr_mult=0.1))
    assert got == {
        "backbone.0.weight": (0.05, 0.1),
        "backbone.1.weight": (0.0, 0.1),
        "backbone.1.bias": (0.0, 0.1),
        "backbone.2.weight": (0.05, 0.1),
        "backbone.2.bias": (0.0, 0.1),
        "neck.0.weight": (0.05, 1.0),
        "neck.0.bias": (0.0, 1.0),
        "neck.1.weight": (0.0, 1.0),
        "neck.1.bias": (0.0, 1.0),
        "head.weight": (0.05, 1.0),
        "head.bias": (0.0, 1.0),
    }  # frozen parameters are left out


def test_norm_and_bias_decay_flags():
    got = groups_by_param(Net(), OptimizerConfig(weight_decay=0.05, norm_decay=True))
    assert got["backbone.1.weight"] == (0.05, 1.0) and got["head.bias"] == (0.0, 1.0)
    got = groups_by_param(Net(), OptimizerConfig(weight_decay=0.05, bias_decay=True))
    assert got["head.bias"] == (0.05, 1.0) and got["neck.1.bias"] == (0.0, 1.0)


@pytest.mark.parametrize(("kind", "cls"), [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)])
def test_optimizer_types_and_group_lrs(kind, cls):
    m = Net()
    opt = build_optimizer(m, OptimizerConfig(type=kind, lr=0.02, backbone_lr_mult=0.5), lr=0.04)
    assert isinstance(opt, cls)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.04 * g["lr_mult"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len([p for p in m.parameters() if p.requires_grad])
    # One step runs and the state round-trips under weights_only.
    m.head(torch.ones(1, 4)).sum().backward()
    opt.step()
    import io

    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt.load_state_dict(torch.load(buf, weights_only=True))


def test_frozen_parameters_are_not_optimised():
    """Frozen backbone stages (requires_grad = False) stay out of every group,
    so weight decay and momentum never move them."""
    m = Net()
    before = [p.detach().clone() for p in m.frozen.parameters()]
    opt = build_optimizer(m, OptimizerConfig(type="sgd", lr=0.1, weight_decay=0.1, momentum=0.9), lr=0.1)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in m.parameters() if p.requires_grad}
    assert not in_opt & {id(p) for p in m.frozen.parameters()}
    x = torch.randn(2, 3, 5, 5)
    for _ in range(2):
        out = m.head(m.neck(m.backbone(x)).mean((2, 3))).sum() + m.frozen(torch.ones(1, 2)).sum()
        out.backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(a, b) for a, b in zip(before, m.frozen.parameters()))
