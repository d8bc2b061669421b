"""freeze and check_finite in real training runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from detcore_hooks.check_finite import NonFiniteError

from detcore.errors import DetcoreError

sys.path.insert(0, str(Path(__file__).parent / "hooks_plugins"))
from hooks_runs import train, write_run  # noqa: E402

pytestmark = pytest.mark.slow

CLS_LOGITS = "head.classification_head.cls_logits.weight"


def test_frozen_parameters_stay_unchanged_until_unfrozen(tmp_path):
    path = write_run(tmp_path, [{"type": "freeze", "prefixes": ["backbone.body"], "until_epoch": 1}])
    assert train(path) == 0
    work = tmp_path / "run"
    initial = torch.load(work / "probe" / "initial_0.pt", weights_only=True)
    after_1 = torch.load(work / "epoch_1.pth", weights_only=True)["model"]
    after_2 = torch.load(work / "epoch_2.pth", weights_only=True)["model"]
    backbone = [k for k in initial if k.startswith("backbone.body.")]
    head = [k for k in initial if k.startswith(("head.", "backbone.fpn."))]
    assert backbone and head
    # Epoch 1: the backbone body, BatchNorm statistics included (norm_eval),
    # is untouched while the FPN and the head train.
    assert all(torch.equal(initial[k], after_1[k]) for k in backbone)
    assert all(not torch.equal(initial[k], after_1[k]) for k in head)
    # Epoch 2: unfrozen, it trains.
    params = [k for k in backbone if k.endswith(("weight", "bias"))]
    assert all(not torch.equal(after_1[k], after_2[k]) for k in params)


def test_unknown_prefix_names_the_modules(tmp_path):
    path = write_run(tmp_path, [{"type": "freeze", "prefixes": ["backbone.layer9"]}])
    with pytest.raises(DetcoreError, match=r"no parameter of the model is named 'backbone\.layer9'.*top-level modules: backbone, head"):
        train(path)


def test_check_finite_stops_before_nan_weights_are_saved(tmp_path):
    # NaN written into the classification logits' weight after step 3, while the loss is still
    # finite: check_finite stops the run at step 3 naming the tensor (the
    # runner alone would only see a NaN loss at step 4), and no checkpoint
    # holds the bad weights.
    hooks = [
        {"type": "check_finite"},
        {"type": "ema"},
        {"type": "nan_weights", "at_iter": 3, "param": CLS_LOGITS},
    ]
    path = write_run(tmp_path, hooks)
    with pytest.raises(NonFiniteError, match=r"after optimizer step 3 \(epoch 2\) 1 tensor\(s\) hold NaN/inf: head\.classification_head\.cls_logits\.weight \(weights\)"):
        train(path)
    work = tmp_path / "run"
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_1.pth"]
    ckpt = torch.load(work / "epoch_1.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
