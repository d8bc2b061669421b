"""tensorboard and progress in real training runs; a run naming a
detcore-hooks hook without the package."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "hooks_plugins"))
from hooks_runs import detcore_cli, detcore_on_terminal, train, write_run  # noqa: E402

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
    assert tags == {f"train/{t}" for t in (*TERMS, "loss", "lr")} | {"val/score"}
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [(e.step, e.value) for e in events.Scalars("val/score")] == [(2, pytest.approx(0.1)), (4, pytest.approx(0.2))]
    assert all(e.value == pytest.approx(0.02) for e in events.Scalars("train/lr"))
    # The same numbers as the runner's own scalars.jsonl (log_interval 1).
    logged = [json.loads(line) for line in (work / "scalars.jsonl").read_text().splitlines()]
    train_records = {r["iter"]: r for r in logged if r["mode"] == "train"}
    for tag in (*TERMS, "loss"):
        for e in events.Scalars(f"train/{tag}"):
            assert e.value == pytest.approx(train_records[e.step][tag], rel=1e-5)


def test_progress_prints_plain_lines_when_stdout_is_not_a_terminal(tmp_path):
    path = write_run(tmp_path, [{"type": "progress", "interval": 2}])
    proc = detcore_cli("train", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\r" not in out  # no bar redraws
    number = r"\d+\.\d{4}"
    for it, epoch in ((2, 1), (4, 2)):
        line = (
            rf"^epoch {epoch}/2 iter {it}/4 loss {number} \("
            + " ".join(rf"{t} {number}" for t in TERMS)
            + r"\) "
            r"lr 0\.02 eta \d+:\d\d:\d\d$"
        )
        assert re.search(line, out, re.M), out
    assert not re.search(r"^epoch 1/2 iter 1/4", out, re.M)  # interval 2
    assert re.search(r"^val batch 1/1$", out, re.M)
    assert re.search(r"^epoch 1/2 val: score 0\.1000$", out, re.M)
    assert re.search(r"^epoch 2/2 val: score 0\.2000$", out, re.M)
    assert re.search(r"^training finished at iteration 4 in \d+:\d\d:\d\d$", out, re.M)


def test_progress_draws_a_bar_on_a_terminal(tmp_path):
    # mode "auto" on a pseudo-terminal (which reports a size of 0 x 0, where
    # tqdm left to itself draws nothing).
    path = write_run(tmp_path, [{"type": "progress"}], train={"max_epochs": 1})
    status, out = detcore_on_terminal("train", str(path), cwd=tmp_path)
    assert status == 0, out
    assert re.search(r"\repoch 1/1: +100%\|.*\| 2/2 \[.*loss \d+\.\d{4} lr 0\.02 eta ", out), out
    assert re.search(r"\rval: +100%\|.*\| 1/1 ", out)
    assert not re.search(r"^epoch 1/1 iter", out, re.M)  # no plain lines


def test_progress_bar_mode_draws_a_tqdm_bar(tmp_path, capsys):
    path = write_run(tmp_path, [{"type": "progress", "mode": "bar"}], train={"max_epochs": 1})
    assert train(path) == 0
    out = capsys.readouterr().out
    assert re.search(r"epoch 1/1: +100%\|.*\| 2/2 ", out), out
    assert re.search(r"loss \d+\.\d{4} lr 0\.02 eta ", out)
    assert re.search(r"val: +100%\|.*\| 1/1 ", out)


def test_run_file_naming_a_hook_without_detcore_hooks(tmp_path):
    path = write_run(tmp_path, [{"type": "ema"}])
    proc = detcore_cli("train", str(path), "-p", "no:hooks", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = proc.stderr + proc.stdout
    assert "key 'hooks[0].type': unknown runner_hook 'ema'" in err
    assert "provided by the detcore-hooks distribution: pip install detcore-hooks" in err
    assert not (tmp_path / "run").exists()  # nothing started
    # Without the hook, the same run trains without detcore-hooks.
    assert train(write_run(tmp_path, [], train={"max_epochs": 1}), plugin_args=["no:hooks"]) == 0
