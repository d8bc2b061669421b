"""The runner's stop decisions and logged losses on 2 real processes
(``detcore train --nproc 2``, CPU, gloo): a signal or a non-finite loss on
one rank stops both at the same iteration; ``scalars.jsonl`` holds the
global batch's losses; the resume hint is the ``--nproc`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "runner_plugins"))

from runner_testutil import cli_subprocess, write_run  # noqa: E402

from detcore.testing import read_scalars  # noqa: E402

pytestmark = pytest.mark.slow


def output(proc) -> str:
    return proc.stdout + proc.stderr


def test_signal_on_one_rank_stops_both_and_losses_are_global(tmp_path):
    run = write_run(
        tmp_path, train={"max_iters": 6}, data={"train": {"num_images": 16}}, checkpoint={"interval": 100},
        hooks=[{"type": "signal_at", "at_iter": 3, "rank": 1}, {"type": "loss_dump"}],
    )
    w = tmp_path / "w"
    proc = cli_subprocess("train", str(run), "--work-dir", str(w), "--nproc", "2", cwd=tmp_path)
    assert proc.returncode == 143, output(proc)
    assert sorted(p.name for p in w.glob("*.pth")) == ["iter_3.pth"]
    hint = f"resume with: detcore -p runner_testkit train {run} --work-dir {w} --nproc 2 --resume {w / 'iter_3.pth'}"
    assert hint in output(proc)
    local = [
        {r["iteration"]: r["loss"] for r in map(json.loads, (w / f"losses_rank{rank}.jsonl").read_text().splitlines())}
        for rank in (0, 1)
    ]
    assert sorted(local[0]) == sorted(local[1]) == [0, 1, 2]  # both ranks stopped after iteration 3
    logged = read_scalars(w, "train")
    assert [r["iter"] for r in logged] == [1, 2, 3]
    for r in logged:
        i = r["iter"] - 1
        assert local[0][i] != pytest.approx(local[1][i])
        assert r["loss"] == pytest.approx((local[0][i] + local[1][i]) / 2, rel=1e-5)


def test_non_finite_loss_on_one_rank_stops_both(tmp_path):
    run = write_run(
        tmp_path, train={"max_iters": 6}, data={"train": {"num_images": 16}}, checkpoint={"interval": 100},
        hooks=[{"type": "nan_at", "at_iter": 2, "rank": 1}],
    )
    proc = cli_subprocess("train", str(run), "--work-dir", str(tmp_path / "w"), "--nproc", "2", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, output(proc)
    out = output(proc)
    assert "the loss is not finite at iteration 2" in out
    assert "on another rank" in out  # rank 0 stopped at the same iteration instead of waiting in DDP
