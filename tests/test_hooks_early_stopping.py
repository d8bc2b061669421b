"""early_stopping in real training runs on a scripted metric sequence, and
exact resume of a run with ema and early_stopping."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from detcore.errors import DetcoreError

sys.path.insert(0, str(Path(__file__).parent / "hooks_plugins"))
from hooks_runs import train, write_run  # noqa: E402

pytestmark = pytest.mark.slow


def validations(work: Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (work / "probe").glob("val_*.pt"))


def test_stops_after_patience_without_improvement(tmp_path):
    # max, patience 2, min_delta 0.06: best 0.5 at epoch 2; 0.4 and 0.55 (not
    # more than 0.06 better) do not improve it, so the run stops after epoch 4.
    values = [0.1, 0.5, 0.4, 0.55, 0.9, 0.9]
    hook = {"type": "early_stopping", "metric": "score", "patience": 2, "min_delta": 0.06}
    path = write_run(
        tmp_path, [hook], train={"max_epochs": 6}, metrics=[{"type": "scripted", "values": values}]
    )
    assert train(path) == 0
    work = tmp_path / "run"
    assert validations(work) == [2, 4, 6, 8]  # iterations: 2 per epoch
    assert json.loads((work / "latest.json").read_text())["checkpoint"] == "epoch_4.pth"
    state = torch.load(work / "epoch_4.pth", weights_only=True)["hooks"]["early_stopping"]
    assert state == {
        "metric": "score", "best": 0.5, "best_epoch": 1, "wait": 2, "stopped_epoch": 3,
    }
    log = next(work.glob("*.log")).read_text()
    assert "early_stopping: stopping after epoch 4 (iteration 8): score has not improved on 0.5 (epoch 2)" in log


def test_unknown_metric_is_a_clear_error(tmp_path):
    hook = {"type": "early_stopping", "metric": "scor"}
    path = write_run(tmp_path, [hook], train={"max_epochs": 1})
    with pytest.raises(DetcoreError, match=r"no metric 'scor' \(did you mean 'score'\?\)"):
        train(path)


def test_resume_with_ema_and_early_stopping_matches_an_uninterrupted_run(tmp_path):
    # min mode, patience 2: best 0.4 after epoch 2, no improvement after
    # epochs 3 and 4, stop after epoch 4 of 6. Resuming after epoch 3 only
    # stops at the same place if best and the counter (1) were restored.
    values = [0.5, 0.4, 0.45, 0.42, 0.1, 0.1]
    hooks = [
        {"type": "ema", "momentum": 0.3, "warmup_iters": 2},
        {"type": "early_stopping", "metric": "score", "mode": "min", "patience": 2},
    ]
    common = {"train": {"max_epochs": 6}, "metrics": [{"type": "scripted", "values": values}]}
    straight = write_run(tmp_path, hooks, name="straight", **common)
    assert train(straight) == 0
    resumed = write_run(tmp_path, hooks, name="resumed", **common)
    assert train(resumed, resume=str(tmp_path / "straight" / "epoch_3.pth")) == 0

    a = torch.load(tmp_path / "straight" / "epoch_4.pth", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "epoch_4.pth", weights_only=True)
    assert not (tmp_path / "straight" / "epoch_5.pth").exists()
    assert not (tmp_path / "resumed" / "epoch_5.pth").exists()
    assert validations(tmp_path / "resumed") == [8]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    ema_a, ema_b = a["hooks"]["ema"], b["hooks"]["ema"]
    assert (ema_a["steps"], ema_a["iter"]) == (ema_b["steps"], ema_b["iter"]) == (8, 8)
    for key in ema_a["state_dict"]:
        assert torch.equal(ema_a["state_dict"][key], ema_b["state_dict"][key]), key
    assert a["hooks"]["early_stopping"] == b["hooks"]["early_stopping"]
    assert b["hooks"]["early_stopping"]["wait"] == 2
