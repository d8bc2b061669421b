"""The runner end to end (in-process through the CLI entry point, with a
small real detector and the synthetic dataset)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "runner_plugins"))

from runner_testutil import VAL, cli, write_run  # noqa: E402

from detcore.testing import read_scalars  # noqa: E402


def events(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "events.jsonl").read_text().splitlines()]


def test_iteration_based_run_hooks_logs_and_files(tmp_path, capsys):
    run = write_run(
        tmp_path, VAL, train={"max_iters": 6, "val_interval": 3}, checkpoint={"interval": 3}, hooks=[{"type": "recorder"}]
    )
    w = tmp_path / "w"
    assert cli("train", str(run), "--work-dir", str(w)) == 0
    out = capsys.readouterr().out
    ev = events(w)
    assert ev[0]["event"] == "before_run" and ev[0]["missing"] == []
    assert ev[0]["class_names"] == ["class0", "class1", "class2"]
    assert ev[-1]["event"] == "after_run"
    vals = [e for e in ev if e["event"] == "after_val_epoch"]
    assert [e["iter"] for e in vals] == [3, 6]
    assert vals[0]["metrics"]["images"] == 5 and vals[0]["metrics"]["distinct_images"] == 5
    # 8 images / batch 2: 4 iterations per pass, so 6 iterations span two passes.
    assert [e["event"] for e in ev if "epoch" in e["event"] and "val" not in e["event"]] == [
        "before_train_epoch", "after_train_epoch", "before_train_epoch",
    ]
    rows = read_scalars(w, "train")
    assert [r["iter"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "loss_cls", "loss_box", "lr", "data_time", "time", "eta_s", "memory_mb", "epoch", "recorder_count"):
        assert key in rows[0], key
    assert rows[0]["loss"] == pytest.approx(rows[0]["loss_cls"] + rows[0]["loss_box"], rel=1e-5)
    assert [r["iter"] for r in read_scalars(w, "val")] == [3, 6]
    assert sorted(p.name for p in w.glob("iter_*.pth")) == ["iter_3.pth", "iter_6.pth"]
    assert len(list(w.glob("*.log"))) == 1
    log = next(w.glob("*.log")).read_text()
    assert "torchvision" in log and "runner_testkit" in log and "detcore.synthetic: detcore" in log
    env = json.loads((w / "env.json").read_text())
    assert env["plugins"]["detcore.synthetic"].startswith("detcore ")
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    resolved = tomllib.loads((w / "resolved.toml").read_text())
    assert resolved["train"]["max_iters"] == 6 and resolved["model"]["type"] == "tiny_det"
    # Each validation's table once; the environment report in the log file only.
    assert out.count("validation after") == 2 and out.count("distinct_images") == 2
    assert "training done: 6 iterations" in out and "iter_6.pth" in out.splitlines()[-1]
    assert out.count("environment: python") == 1 and "  torchvision:" not in out and "  torchvision:" in log


def test_epoch_based_val_interval_and_no_validate(tmp_path):
    run = write_run(tmp_path, VAL, train={"max_epochs": 3, "val_interval": 2}, data={"train": {"num_images": 4}},
                    hooks=[{"type": "recorder"}])
    assert cli("train", str(run), "--work-dir", str(tmp_path / "a")) == 0
    # Epoch 2 by the interval, epoch 3 at the end of training.
    assert [r["iter"] for r in read_scalars(tmp_path / "a", "val")] == [4, 6]
    assert sorted(p.name for p in (tmp_path / "a").glob("epoch_*.pth")) == ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth"]
    assert cli("train", str(run), "--work-dir", str(tmp_path / "b"), "--no-validate") == 0
    assert read_scalars(tmp_path / "b", "val") == []
    assert not any(e["event"] == "before_val_epoch" for e in events(tmp_path / "b"))


def test_val_model_hook_and_boxes_in_original_pixels(tmp_path):
    run = write_run(tmp_path, VAL, train={"max_iters": 1}, hooks=[{"type": "fixed_val_model"}])
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 0
    (val,) = read_scalars(tmp_path / "w", "val")
    # The val images are 32x48 (h x w) resized to 24x36: the fixed box
    # [1, 2, 3, 4] in model pixels is [4/3, 8/3, 4, 16/3] in the original.
    assert val["max_x"] == pytest.approx(4.0)
    assert val["checksum"] == pytest.approx(5 * (40 / 3 + 0.5))


def test_hooks_are_unregistered_after_the_run(tmp_path):
    from detcore.engine.train import train
    from detcore.runfile import load_run

    run_file = write_run(tmp_path, train={"max_iters": 1}, hooks=[{"type": "recorder"}])
    run = load_run(run_file, [f"work_dir = '{tmp_path / 'w'}'"], ["runner_testkit"])
    assert train(run) == 0
    assert not [n for n, _ in run.pm.list_name_plugin() if str(n).startswith("runner-hook:")]


def test_nan_loss_stops_cleanly_and_keeps_the_last_checkpoint(tmp_path, capsys):
    run = write_run(tmp_path, train={"max_iters": 6}, checkpoint={"interval": 2}, hooks=[{"type": "nan_at", "at_iter": 3}])
    w = tmp_path / "w"
    assert cli("train", str(run), "--work-dir", str(w)) == 1
    err = capsys.readouterr().err
    assert "not finite at iteration 3" in err and "loss_cls=nan" in err and "loss_box=" in err
    assert "iter_2.pth" in err and "Traceback" not in err
    assert sorted(p.name for p in w.glob("*.pth")) == ["iter_2.pth"]
    ckpt = torch.load(w / "iter_2.pth", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert json.loads((w / "latest.json").read_text())["checkpoint"] == "iter_2.pth"


def test_stop_training_from_a_hook_saves_and_ends_normally(tmp_path):
    run = write_run(tmp_path, train={"max_iters": 10}, checkpoint={"interval": 100},
                    hooks=[{"type": "stop_at", "at_iter": 3}, {"type": "recorder"}])
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 0
    assert [p.name for p in (tmp_path / "w").glob("*.pth")] == ["iter_3.pth"]
    assert events(tmp_path / "w")[-1] == {"event": "after_run", "iter": 3, "epoch": 0, "count": 3}


def test_amp_clip_accumulate_and_auto_scale_lr(tmp_path, capsys):
    run = write_run(tmp_path, train={"max_epochs": 1, "amp": "bf16", "grad_clip": 1.0, "accumulate": 2},
                    auto_scale_lr={"base_batch_size": 8})
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), "--auto-scale-lr") == 0
    out = capsys.readouterr().out
    # global batch 2 x 1 x accumulate 2 = 4 on a base of 8: lr 0.01 -> 0.005
    assert "auto-scale-lr: lr 0.01 -> 0.005" in out
    rows = read_scalars(tmp_path / "w", "train")
    assert [r["iter"] for r in rows] == [1, 2]  # 4 batches, 2 per step
    assert rows[-1]["lr"] == pytest.approx(0.005 * (0.001 + 0.999 * 1 / 2))
    assert all("grad_norm" in r for r in rows)
    assert "optimizer sgd lr 0.005" in out


def test_fp16_on_cpu_and_missing_train_data_are_run_file_errors(tmp_path, capsys):
    run = write_run(tmp_path, train={"max_iters": 1})
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), "--amp", "fp16") == 2
    err = capsys.readouterr().err
    assert "train.amp" in err and "bf16" in err
    run = write_run(tmp_path, train={"max_iters": 1}, model={"num_classes": 2})
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 2
    assert "model.num_classes = 2" in capsys.readouterr().err
    write_run(tmp_path, train={"max_iters": 1}, data={"train": None}, name="nodata.toml")  # None: left out
    assert cli("train", str(tmp_path / "nodata.toml"), "--work-dir", str(tmp_path / "w")) == 2
    assert "data.train" in capsys.readouterr().err


def test_worker_processes_give_the_same_losses(tmp_path):
    # Per-sample seeding: augmentation does not depend on who loads the item.
    run0 = write_run(tmp_path, train={"max_iters": 3}, name="w0.toml", data={"workers": 0})
    run2 = write_run(tmp_path, train={"max_iters": 3}, name="w2.toml", data={"workers": 2})
    assert cli("train", str(run0), "--work-dir", str(tmp_path / "a")) == 0
    assert cli("train", str(run2), "--work-dir", str(tmp_path / "b")) == 0
    assert [r["loss"] for r in read_scalars(tmp_path / "a", "train")] == [
        r["loss"] for r in read_scalars(tmp_path / "b", "train")
    ]


def test_crowd_boxes_are_not_trained_on(tmp_path):
    """Datasets keep iscrowd boxes (ignore regions for evaluation); the model
    is given the targets without them."""
    from runner_testkit import SEEN_TARGETS

    crowd = {"type": "crowd_synthetic", "num_images": 8, "image_size": 32, "num_classes": 3}  # no transforms
    run = write_run(tmp_path, train={"max_iters": 2}, hooks=[{"type": "target_spy"}], data={"train": crowd})
    SEEN_TARGETS.clear()
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 0
    from runner_testkit import crowd_synthetic

    ds = crowd_synthetic()
    assert all(int(t["iscrowd"].sum()) == 1 for _, t in (ds[0], ds[1]))  # the dataset keeps them
    targets = [t for batch in SEEN_TARGETS for t in batch]
    assert len(targets) == 4
    for t in targets:
        assert not t["iscrowd"].any()
        assert len(t["boxes"]) == len(t["labels"]) == len(t["iscrowd"])
        full = ds[t["image_id"]][1]
        assert len(t["boxes"]) == len(full["boxes"]) - 1
        assert torch.equal(t["boxes"], full["boxes"].as_subclass(torch.Tensor)[:-1].float())


def test_hook_with_a_wrong_argument_name_is_a_plugin_error(tmp_path, capsys):
    run = write_run(tmp_path, train={"max_iters": 2}, hooks=[{"type": "bad_args"}])
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) != 0
    err = capsys.readouterr().err
    assert "runner-hook:0:bad_args" in err and "loss" in err and "docs/plugins.md" in err
    assert "Traceback" not in err


def test_sync_bn_on_cpu_is_refused_before_training():
    import types

    from detcore.engine.build import wrap_model
    from detcore.errors import DetcoreError
    from detcore.runfile.schema import DistConfig

    info = types.SimpleNamespace(distributed=True)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    with pytest.raises(DetcoreError, match="dist.sync_bn needs CUDA.*set dist.sync_bn = false"):
        wrap_model(model, info, DistConfig(sync_bn=True), torch.device("cpu"))


def test_resume_hint_is_the_exact_command_line(tmp_path, capsys, monkeypatch):
    run = write_run(tmp_path, train={"max_iters": 6}, checkpoint={"interval": 100}, hooks=[{"type": "signal_at", "at_iter": 2}])
    w = tmp_path / "w"
    assert cli("train", str(run), "--work-dir", str(w), "--set", "train.log_interval=2") == 143
    err = "".join(capsys.readouterr())
    assert (f"resume with: detcore -p runner_testkit train {run} --work-dir {w} --set train.log_interval=2 "
            f"--resume {w / 'iter_2.pth'}") in err
    # A worker of `detcore train --nproc N` gives the launcher's command line.
    w2 = tmp_path / "w2"
    monkeypatch.setenv("DETCORE_LAUNCH_ARGV", json.dumps(["train", str(run), "--work-dir", str(w2), "--nproc", "2"]))
    assert cli("train", str(run), "--work-dir", str(w2)) == 143
    err = "".join(capsys.readouterr())
    assert f"resume with: detcore train {run} --work-dir {w2} --nproc 2 --resume {w2 / 'iter_2.pth'}" in err


def test_max_time_ends_training_with_validation_and_a_checkpoint(tmp_path, capsys):
    """train.max_time (issue 18): a 1.5 s budget at 0.25 s a step stops a
    10000-iteration run after a few steps, validated and saved."""
    run = write_run(tmp_path, VAL, train={"max_iters": 10000, "val_interval": 100000, "max_time": "1.5s"},
                    checkpoint={"interval": 100000}, hooks=[{"type": "slow_steps", "seconds": 0.25}])
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 0
    captured = capsys.readouterr()
    log = captured.out + captured.err
    stopped = int(log.split("(train.max_time) used up at iteration ")[1].split(":")[0])
    assert 3 <= stopped < 40
    assert sorted(p.name for p in (tmp_path / "w").glob("iter_*.pth")) == [f"iter_{stopped}.pth"]
    assert [r["iter"] for r in read_scalars(tmp_path / "w", "val")] == [stopped]


def test_max_time_stretches_the_lr_schedule_over_the_budget(tmp_path):
    """stretch_schedule: the run lasts the budget (6 s at about 0.5 s a
    step: past the 8 steps of max_epochs = 2) and the multistep milestone
    (1 epoch = step 4 of 8) moves out in proportion: to about 4 x steps / 8."""
    from detcore.engine.runner import Runner
    from detcore.runfile import load_run

    run = write_run(tmp_path, train={"max_epochs": 2, "max_time": "6s", "stretch_schedule": True},
                    hooks=[{"type": "slow_steps", "seconds": 0.4}])
    runner = Runner(load_run(str(run), [f"work_dir={tmp_path / 'w'}"]))
    assert runner.train() == 0
    lrs = runner.lrs
    assert len(lrs) > 8, lrs  # the budget, not max_epochs, ended the run
    first_drop = next(i for i in range(3, len(lrs)) if lrs[i] < 0.5 * lrs[2])
    assert first_drop > 4 and abs(first_drop - 4 * len(lrs) / 8) <= 2, lrs


def test_max_time_must_be_a_duration(tmp_path, capsys):
    run = write_run(tmp_path, train={"max_iters": 4, "max_time": "2 hours"})
    assert cli("config", "check", str(run)) == 2
    err = capsys.readouterr().err
    assert "train.max_time" in err and '"90m"' in err
    run = write_run(tmp_path, train={"max_iters": 4, "stretch_schedule": True})
    assert cli("config", "check", str(run)) == 2
    assert "stretch_schedule needs max_time" in capsys.readouterr().err
