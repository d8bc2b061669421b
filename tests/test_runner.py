"""The runner end to end (in-process through the CLI entry point, with a
small real detector and the synthetic dataset)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "runner_plugins"))

from runner_testutil import cli, scalars, write_run  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def events(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "events.jsonl").read_text().splitlines()]


def test_iteration_based_run_hooks_logs_and_files(tmp_path, capsys):
    run = write_run(
        tmp_path, schedule="max_iters = 6\nval_interval = 3", ckpt_interval=3, val=True,
        extra="[[hooks]]\ntype = \"recorder\"\n",
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
    rows = scalars(w)
    assert [r["iter"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "loss_cls", "loss_box", "lr", "data_time", "time", "eta_s", "memory_mb", "epoch", "recorder_count"):
        assert key in rows[0], key
    assert rows[0]["loss"] == pytest.approx(rows[0]["loss_cls"] + rows[0]["loss_box"], rel=1e-5)
    assert [r["iter"] for r in scalars(w, "val")] == [3, 6]
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
    assert "final metrics" in out and "distinct_images" in out


def test_epoch_based_val_interval_and_no_validate(tmp_path):
    run = write_run(tmp_path, schedule="max_epochs = 3\nval_interval = 2", num_images=4, val=True,
                    extra="[[hooks]]\ntype = \"recorder\"\n")
    assert cli("train", str(run), "--work-dir", str(tmp_path / "a")) == 0
    # Epoch 2 by the interval, epoch 3 at the end of training.
    assert [r["iter"] for r in scalars(tmp_path / "a", "val")] == [4, 6]
    assert sorted(p.name for p in (tmp_path / "a").glob("epoch_*.pth")) == ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth"]
    assert cli("train", str(run), "--work-dir", str(tmp_path / "b"), "--no-validate") == 0
    assert scalars(tmp_path / "b", "val") == []
    assert not any(e["event"] == "before_val_epoch" for e in events(tmp_path / "b"))


def test_val_model_hook_and_boxes_in_original_pixels(tmp_path):
    run = write_run(tmp_path, schedule="max_iters = 1", val=True, extra="[[hooks]]\ntype = \"fixed_val_model\"\n")
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 0
    (val,) = scalars(tmp_path / "w", "val")
    # The val images are 32x48 (h x w) resized to 24x36: the fixed box
    # [1, 2, 3, 4] in model pixels is [4/3, 8/3, 4, 16/3] in the original.
    assert val["max_x"] == pytest.approx(4.0)
    assert val["checksum"] == pytest.approx(5 * (40 / 3 + 0.5))


def test_hooks_are_unregistered_after_the_run(tmp_path):
    from detcore.engine.train import train
    from detcore.runfile import load_run

    run_file = write_run(tmp_path, schedule="max_iters = 1", extra="[[hooks]]\ntype = \"recorder\"\n")
    run = load_run(run_file, [f"work_dir = '{tmp_path / 'w'}'"], ["runner_testkit"])
    assert train(run) == 0
    assert not [n for n, _ in run.pm.list_name_plugin() if str(n).startswith("runner-hook:")]


def test_nan_loss_stops_cleanly_and_keeps_the_last_checkpoint(tmp_path, capsys):
    run = write_run(tmp_path, schedule="max_iters = 6", ckpt_interval=2, extra="[[hooks]]\ntype = \"nan_at\"\nat_iter = 3\n")
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
    run = write_run(tmp_path, schedule="max_iters = 10", ckpt_interval=100,
                    extra="[[hooks]]\ntype = \"stop_at\"\nat_iter = 3\n[[hooks]]\ntype = \"recorder\"\n")
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 0
    assert [p.name for p in (tmp_path / "w").glob("*.pth")] == ["iter_3.pth"]
    assert events(tmp_path / "w")[-1] == {"event": "after_run", "iter": 3, "epoch": 0, "count": 3}


def test_amp_clip_accumulate_and_auto_scale_lr(tmp_path, capsys):
    extra = "\n[auto_scale_lr]\nbase_batch_size = 8\n"
    run = write_run(tmp_path, schedule="max_epochs = 1\namp = \"bf16\"\ngrad_clip = 1.0\naccumulate = 2", extra=extra)
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), "--auto-scale-lr") == 0
    out = capsys.readouterr().out
    # global batch 2 x 1 x accumulate 2 = 4 on a base of 8: lr 0.01 -> 0.005
    assert "auto-scale-lr: lr 0.01 -> 0.005" in out
    rows = scalars(tmp_path / "w")
    assert [r["iter"] for r in rows] == [1, 2]  # 4 batches, 2 per step
    assert rows[-1]["lr"] == pytest.approx(0.005 * (0.001 + 0.999 * 1 / 2))
    assert all("grad_norm" in r for r in rows)
    assert "optimizer sgd lr 0.005" in out


def test_fp16_on_cpu_and_missing_train_data_are_run_file_errors(tmp_path, capsys):
    run = write_run(tmp_path, schedule="max_iters = 1")
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), "--amp", "fp16") == 2
    err = capsys.readouterr().err
    assert "train.amp" in err and "bf16" in err
    run.write_text(run.read_text().replace("num_classes = 3\n\n[data]", "num_classes = 2\n\n[data]"))
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 2
    assert "model.num_classes = 2" in capsys.readouterr().err
    text = write_run(tmp_path, schedule="max_iters = 1").read_text()
    start = text.index("[data.train]")
    (tmp_path / "nodata.toml").write_text(text[:start] + text[text.index("[optimizer]"):])
    assert cli("train", str(tmp_path / "nodata.toml"), "--work-dir", str(tmp_path / "w")) == 2
    assert "data.train" in capsys.readouterr().err


def test_worker_processes_give_the_same_losses(tmp_path):
    # Per-sample seeding: augmentation does not depend on who loads the item.
    run0 = write_run(tmp_path, schedule="max_iters = 3", name="w0.toml", workers=0)
    run2 = write_run(tmp_path, schedule="max_iters = 3", name="w2.toml", workers=2)
    assert cli("train", str(run0), "--work-dir", str(tmp_path / "a")) == 0
    assert cli("train", str(run2), "--work-dir", str(tmp_path / "b")) == 0
    assert [r["loss"] for r in scalars(tmp_path / "a")] == [r["loss"] for r in scalars(tmp_path / "b")]
