"""tensorboard in real training runs; a run naming a detcore-hooks hook
without the package. (The console, once the progress hook, is the core's:
tests/test_console.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "hooks_plugins"))
from hooks_runs import PLUGINS_DIR, train, write_run  # noqa: E402

from detcore.testing import read_scalars, run_detcore  # noqa: E402

pytestmark = pytest.mark.slow

TERMS = ("classification", "bbox_regression", "bbox_ctrness")  # FCOS's loss terms


def test_tensorboard_event_files_hold_losses_lr_and_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = write_run(tmp_path, [{"type": "tensorboard"}])
    assert train(path) == 0
    work = tmp_path / "run"
    events = EventAccumulator(str(work / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {t for t in tags if t.startswith("train/")} == {f"train/{t}" for t in (*TERMS, "loss", "lr")}
    # Every validation metric (the scripted metric also reports its checks, e.g. val/images).
    assert "val/score" in tags and all(t.startswith(("train/", "val/")) for t in tags)
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [(e.step, e.value) for e in events.Scalars("val/score")] == [(2, pytest.approx(0.1)), (4, pytest.approx(0.2))]
    assert all(e.value == pytest.approx(0.02) for e in events.Scalars("train/lr"))
    # The same numbers as the runner's own scalars.jsonl (log_interval 1).
    train_records = {r["iter"]: r for r in read_scalars(work, "train")}
    for tag in (*TERMS, "loss"):
        for e in events.Scalars(f"train/{tag}"):
            assert e.value == pytest.approx(train_records[e.step][tag], rel=1e-5)


def test_run_file_naming_a_hook_without_detcore_hooks(tmp_path):
    path = write_run(tmp_path, [{"type": "ema"}])
    proc = run_detcore("train", path, "-p", "no:hooks", cwd=tmp_path, plugin_paths=[PLUGINS_DIR])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr + proc.stdout
    assert "key 'hooks[0].type': unknown runner_hook 'ema'" in err
    assert "provided by the detcore-hooks distribution: pip install detcore-hooks" in err
    assert not (tmp_path / "run").exists()  # nothing started
    # Without the hook, the same run trains without detcore-hooks.
    assert train(write_run(tmp_path, [], train={"max_epochs": 1}), plugin_args=["no:hooks"]) == 0
