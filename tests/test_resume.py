"""Exact resume: stopped (by a hook or by SIGTERM) and resumed runs end with
the same weights, bit for bit, as an uninterrupted one, and log the same
losses; resuming mid-epoch skips the seen samples without loading them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "runner_plugins"))

from runner_testutil import cli, cli_subprocess, weights, write_run  # noqa: E402

from detcore.testing import read_scalars  # noqa: E402

RECORDER = {"type": "recorder"}


def stop_at(at: int) -> dict:
    return {"type": "stop_at", "at_iter": at}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different}"


def losses_by_iter(work_dir: Path) -> dict[int, tuple]:
    # The last line per iteration wins (an interrupted run may have logged
    # iterations past its checkpoint before a resumed run logs them again).
    out = {}
    for r in read_scalars(work_dir, "train"):
        out[r["iter"]] = (r["loss"], r["loss_cls"], r["loss_box"], r["lr"])
    return out


def test_stop_mid_epoch_and_resume_is_bit_exact(tmp_path):
    straight = write_run(tmp_path, name="straight.toml", hooks=[RECORDER])
    stopped = write_run(tmp_path, name="stopped.toml", hooks=[RECORDER, stop_at(6)])
    # 8 images, batch 2: 4 iterations per epoch; iteration 6 is in the middle of epoch 2.
    assert cli("train", str(straight), "--work-dir", str(tmp_path / "a"), "--deterministic") == 0
    assert cli("train", str(stopped), "--work-dir", str(tmp_path / "b"), "--deterministic") == 0
    assert (tmp_path / "b" / "iter_6.pth").exists()
    assert not (tmp_path / "b" / "epoch_2.pth").exists()
    assert cli("train", str(straight), "--work-dir", str(tmp_path / "b"), "--deterministic", "--resume", "auto") == 0
    assert_same_weights(tmp_path / "a" / "epoch_2.pth", tmp_path / "b" / "epoch_2.pth")
    a, b = losses_by_iter(tmp_path / "a"), losses_by_iter(tmp_path / "b")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert a == b
    # The hook's state travelled through the checkpoint: its counter
    # continued from 6, as in the straight run.
    rec_a = [r["recorder_count"] for r in read_scalars(tmp_path / "a", "train")]
    rec_b = [r["recorder_count"] for r in read_scalars(tmp_path / "b", "train")][-2:]
    assert rec_b == rec_a[-2:] == [7, 8]


def test_resume_skips_seen_samples_without_loading_them(tmp_path):
    from runner_testkit import LOADED

    # The counting training set instead of the synthetic one.
    counting = {"data": {"train": {"type": "counting_synthetic", "num_images": 8}}}
    write_run(tmp_path, counting, name="count.toml")
    write_run(tmp_path, counting, name="count_stop.toml", hooks=[stop_at(7)])
    LOADED.clear()
    assert cli("train", str(tmp_path / "count.toml"), "--work-dir", str(tmp_path / "a")) == 0
    straight = list(LOADED)
    assert len(straight) == 16
    LOADED.clear()
    assert cli("train", str(tmp_path / "count_stop.toml"), "--work-dir", str(tmp_path / "b")) == 0
    assert LOADED == straight[:14]
    LOADED.clear()
    assert cli("train", str(tmp_path / "count.toml"), "--work-dir", str(tmp_path / "b"), "--resume", "auto") == 0
    # Iteration 7 of 8 was the third batch of epoch 2: only the last batch is
    # loaded after resuming, the same two images the straight run used.
    assert LOADED == straight[14:]


@pytest.mark.slow
def test_sigterm_checkpoint_and_resume_in_subprocesses(tmp_path):
    common = {"train": {"max_iters": 6}, "data": {"workers": 1}, "checkpoint": {"interval": 100}}
    plain = write_run(tmp_path, name="plain.toml", **common)
    sig = write_run(tmp_path, name="sig.toml", **common, hooks=[{"type": "signal_at", "at_iter": 3, "signal": "SIGTERM"}])
    r = cli_subprocess("train", str(plain), "--work-dir", "a", "--deterministic", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    r = cli_subprocess("train", str(sig), "--work-dir", "b", "--deterministic", cwd=tmp_path)
    assert r.returncode == 143, r.stderr + r.stdout
    out = r.stdout + r.stderr
    assert "SIGTERM" in out and "iter_3.pth" in out
    hint = re.search(r"resume with: (.*)", out).group(1)
    assert "--resume" in hint and "b/iter_3.pth" in hint
    assert not (tmp_path / "b" / "iter_6.pth").exists()
    r = cli_subprocess("train", str(plain), "--work-dir", "b", "--deterministic", "--resume", "b/iter_3.pth", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    assert_same_weights(tmp_path / "a" / "iter_6.pth", tmp_path / "b" / "iter_6.pth")
    assert losses_by_iter(tmp_path / "a") == losses_by_iter(tmp_path / "b")


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_130(tmp_path):
    run = write_run(
        tmp_path, train={"max_iters": 5}, checkpoint={"interval": 100},
        hooks=[{"type": "signal_at", "at_iter": 2, "signal": "SIGINT"}],
    )
    r = cli_subprocess("train", str(run), "--work-dir", "w", cwd=tmp_path)
    assert r.returncode == 130, r.stderr + r.stdout
    assert "stopped by SIGINT at iteration 2" in r.stdout + r.stderr
    assert sorted(p.name for p in (tmp_path / "w").glob("*.pth")) == ["iter_2.pth"]
    assert "Traceback" not in r.stderr
