"""ema in real training runs: the EMA weights differ from the raw ones, are
what validation used, and pluggy's order decides between two val models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from detcore.runfile import load_run

sys.path.insert(0, str(Path(__file__).parent / "hooks_plugins"))
from hooks_runs import train, write_run  # noqa: E402

pytestmark = pytest.mark.slow

EMA = {"type": "ema", "momentum": 0.3, "warmup_iters": 2}


def build_model(run_file, state_dict):
    run = load_run(run_file)
    model = run.catalog.build("detector", run.cfg.model, path="model")
    model.load_state_dict(state_dict)
    return model.eval()


def assert_predicted_by(model, records, *, same: bool):
    with torch.inference_mode():
        outputs = model([r["image"] for r in records])
    for r, out in zip(records, outputs):
        match = torch.allclose(out["scores"], r["scores"], atol=1e-6) and torch.allclose(
            out["boxes"], r["boxes"], atol=1e-4
        )
        assert match is same


def test_validation_uses_the_ema_weights(tmp_path):
    path = write_run(tmp_path, [EMA])
    assert train(path) == 0
    work = tmp_path / "run"
    ckpt = torch.load(work / "epoch_2.pth", weights_only=True)
    ema = ckpt["hooks"]["ema"]
    assert ema["steps"] == 4 and ema["iter"] == 4
    raw, avg = ckpt["model"], ema["state_dict"]
    assert raw.keys() == avg.keys()
    float_keys = [k for k in raw if raw[k].is_floating_point() and "running" not in k]
    assert all(not torch.equal(raw[k], avg[k]) for k in float_keys)
    # Buffers follow the model (update_buffers = false).
    assert all(torch.equal(raw[k], avg[k]) for k in raw if "running" in k)

    # The checkpoint carries the weights validation used, and the tools
    # (test, predict, export, load_from) read those.
    from detcore.engine.checkpoint import weights_of

    assert all(torch.equal(ckpt["eval_model"][k], avg[k]) for k in avg)
    picked, raw_picked = weights_of(ckpt), weights_of(ckpt, prefer_eval=False)
    assert all(torch.equal(picked[k], avg[k]) for k in avg)
    assert any(not torch.equal(raw_picked[k], avg[k]) for k in float_keys)

    records = torch.load(work / "probe" / "val_4.pt", weights_only=True)
    assert len(records) == 4
    assert_predicted_by(build_model(path, avg), records, same=True)
    assert_predicted_by(build_model(path, raw), records, same=False)


def test_tryfirst_val_model_beats_ema(tmp_path):
    """Two hooks answer detcore_val_model: the test hook marked tryfirst wins
    even though ema is listed last (and would otherwise run first). With
    gradient accumulation the EMA follows optimizer steps, not micro-batches."""
    path = write_run(tmp_path, [{"type": "raw_val_model"}, EMA], train={"max_epochs": 2, "accumulate": 2})
    assert train(path) == 0
    work = tmp_path / "run"
    ckpt = torch.load(work / "epoch_2.pth", weights_only=True)
    assert ckpt["meta"]["iter"] == ckpt["hooks"]["ema"]["steps"] == 2  # 2 micro-batches a step
    records = torch.load(work / "probe" / "val_2.pt", weights_only=True)
    assert_predicted_by(build_model(path, ckpt["model"]), records, same=True)
    assert_predicted_by(build_model(path, ckpt["hooks"]["ema"]["state_dict"]), records, same=False)
