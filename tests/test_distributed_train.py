"""``detcore train`` on 2 processes (CPU, gloo, real torch.distributed,
started by ``--nproc 2``) against a single process with the same global
batch: parameters, evaluation, resume, a failing rank, a slow metric, two
jobs at once and a taken port.

The runs are shared by the tests (module-scoped fixtures); the detector,
metric and hooks are the test plugin tests/dist_plugins/detcore_dist_testkit.py
(``stop_at``: the shipped plugin ``detcore.testing``).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from detcore.testing import read_scalars, run_detcore, start_detcore, tiny_run, write_runfile

pytestmark = pytest.mark.slow

PLUGINS = Path(__file__).parent / "dist_plugins"
MAX_ITERS = 8
VAL_SIZE = 7  # odd: does not divide by the world size
COLLECTIVE_TIMEOUT_S = 8
SLOW_METRIC_S = 9  # longer than the collective timeout


def run_file(path: Path, *, batch_size: int, sleep_s: float = 0, hooks: list[dict] = (), **changes) -> Path:
    """A run of the test plugin's detector on 16 training and VAL_SIZE
    validation images, MAX_ITERS iterations, validated and saved every 4;
    every rank's parameters saved at the end (``save_params``), then
    ``hooks``; ``changes`` merged in."""
    run = tiny_run(
        {
            "plugins": ["detcore_dist_testkit", "detcore.testing"],
            "model": {"type": "dist_tiny_det", "num_classes": 3},
            "data": {
                "batch_size": batch_size,
                "aspect_ratio_grouping": False,
                "train": {"type": "synthetic", "num_images": 16, "image_size": 32, "seed": 1},
                "val": {"type": "synthetic", "num_images": VAL_SIZE, "image_size": 32, "seed": 2},
            },
            "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
            "lr_schedule": {"type": "constant", "warmup": "none"},
            # 0.05 x global batch 4 / 8: only the global batch gives 0.025
            "auto_scale_lr": {"enable": True, "base_batch_size": 8},
            "train": {"max_iters": MAX_ITERS, "val_interval": 4, "log_interval": 1},
            "checkpoint": {"interval": 4, "keep": -1},
            "dist": {"timeout_s": COLLECTIVE_TIMEOUT_S, "eval_timeout_s": 120},
            "metrics": [{"type": "prediction_summary", "sleep_s": sleep_s, "sleep_calls": 1}],
            "hooks": [{"type": "save_params"}, *hooks],
        },
        changes,
    )
    return write_runfile(path, run)


def train(run: Path, work_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return run_detcore("train", run, "--work-dir", work_dir, *args, plugin_paths=[PLUGINS], timeout=timeout)


def start(run: Path, work_dir: Path, *args: str) -> subprocess.Popen:
    return start_detcore("train", run, "--work-dir", work_dir, *args, plugin_paths=[PLUGINS])


def finish(proc: subprocess.Popen, timeout: float = 240) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def params(work_dir: Path, rank: int) -> dict:
    import torch

    return torch.load(work_dir / f"params_rank{rank}.pt", weights_only=True)


def scalars(work_dir: Path, mode: str) -> dict[int, dict]:
    return {r["iter"]: r for r in read_scalars(work_dir, mode)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """straight: 2 x 2 images, a slow metric; stopped: the same run stopped
    after iteration 4 (started at the same moment: two --nproc 2 jobs on one
    machine); single: 1 x 4 images; resumed: ``stopped`` resumed to the end."""
    d = tmp_path_factory.mktemp("dist_train")
    straight = run_file(d / "straight.toml", batch_size=2, sleep_s=SLOW_METRIC_S)
    fast = run_file(d / "fast.toml", batch_size=2)
    stop = run_file(d / "stop.toml", batch_size=2, hooks=[{"type": "stop_at", "at_iter": 4}])
    single = run_file(d / "single.toml", batch_size=4)
    out = {"dir": d}
    t0 = time.monotonic()
    procs = {
        "straight": start(straight, d / "straight", "--nproc", "2"),
        "stopped": start(stop, d / "stopped", "--nproc", "2"),
    }
    out.update({name: finish(p) for name, p in procs.items()})
    out["concurrent_s"] = time.monotonic() - t0
    out["single"] = train(single, d / "single")
    out["resumed"] = train(fast, d / "stopped", "--nproc", "2", "--resume", "auto")
    return out


def ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-4000:]


def test_two_concurrent_nproc_jobs_both_finish(runs):
    """Issue 12.6 (MMDetection #261): two --nproc 2 jobs started at once on
    one machine each pick their own free port."""
    ok(runs["straight"])
    ok(runs["stopped"])
    assert max(scalars(runs["dir"] / "straight", "train")) == MAX_ITERS
    assert max(scalars(runs["dir"] / "stopped", "train")) >= 4


def test_parameters_identical_on_ranks_and_match_single_process(runs):
    import torch

    ok(runs["straight"])
    ok(runs["single"])
    d = runs["dir"]
    r0, r1, single = params(d / "straight", 0), params(d / "straight", 1), params(d / "single", 0)
    assert r0.keys() == r1.keys() == single.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
        torch.testing.assert_close(r0[k], single[k], rtol=1e-4, atol=1e-5, msg=k)
    # Training moved the weights (so matching them means something): the
    # single-process run's loss fell.
    single_losses = scalars(d / "single", "train")
    assert single_losses[MAX_ITERS]["loss"] < single_losses[1]["loss"]
    # auto_scale_lr counted the global batch (2 per process x 2), as the
    # single process did (4).
    for rows in (scalars(d / "straight", "train"), single_losses):
        assert all(r["lr"] == pytest.approx(0.025) for r in rows.values())


def test_distributed_eval_equals_single_process_on_odd_val_set(runs):
    ok(runs["straight"])
    ok(runs["single"])
    dist_val = scalars(runs["dir"] / "straight", "val")
    single_val = scalars(runs["dir"] / "single", "val")
    assert sorted(dist_val) == sorted(single_val) == [4, MAX_ITERS]
    for it, row in dist_val.items():
        # Every image once: none dropped, none duplicated by sampler padding.
        assert row["n_predictions"] == row["n_images"] == row["dataset_len"] == VAL_SIZE
        assert row["n_dets"] == single_val[it]["n_dets"]
        for key in ("score_sum", "box_sum", "top_score"):
            assert row[key] == pytest.approx(single_val[it][key], rel=1e-4), (it, key)
    # The metric's own summary, of the gathered predictions, is logged once
    # per validation by rank 0 (on its console and in the log file), never by rank 1.
    line = f"prediction summary: {VAL_SIZE} predictions for {VAL_SIZE} of {VAL_SIZE} images"
    out, err = runs["straight"].stdout, runs["straight"].stderr
    log = next((runs["dir"] / "straight").glob("*.log")).read_text()
    assert out.count(line) == log.count(line) == 2 and "prediction summary" not in err


def test_slow_metric_longer_than_collective_timeout_completes(runs):
    """Issue 12.5 (MMDetection #11096): rank 0 computes a metric for longer
    than the collective timeout; the other rank waits for it and training
    goes on after the validation (more DDP iterations, another validation)."""
    ok(runs["straight"])
    d = runs["dir"] / "straight"
    assert SLOW_METRIC_S > COLLECTIVE_TIMEOUT_S
    log = next(d.glob("*.log")).read_text()
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib

    resolved = tomllib.loads((d / "resolved.toml").read_text())
    assert resolved["dist"]["timeout_s"] == COLLECTIVE_TIMEOUT_S
    assert sorted(scalars(d, "val")) == [4, MAX_ITERS]
    assert set(range(5, MAX_ITERS + 1)) <= set(scalars(d, "train"))
    assert "Timed out" not in log and "timed out" not in runs["straight"].stderr


def test_resume_two_process_continues_same_trajectory(runs):
    import torch

    ok(runs["stopped"])
    ok(runs["resumed"])
    d = runs["dir"]
    straight_losses = scalars(d / "straight", "train")
    resumed_losses = scalars(d / "stopped", "train")
    assert "resumed from" in runs["resumed"].stdout + runs["resumed"].stderr
    for it in range(5, MAX_ITERS + 1):
        assert resumed_losses[it]["loss"] == straight_losses[it]["loss"], it
    straight, r0, r1 = params(d / "straight", 0), params(d / "stopped", 0), params(d / "stopped", 1)
    for k in straight:
        assert torch.equal(r0[k], r1[k]), k
        assert torch.equal(r0[k], straight[k]), k


def test_failing_rank_ends_the_job_with_its_error(tmp_path):
    run = run_file(tmp_path / "fail.toml", batch_size=2, hooks=[{"type": "fail_on_rank", "rank": 1, "at_iter": 2}])
    t0 = time.monotonic()
    proc = train(run, tmp_path / "w", "--nproc", "2", timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("detcore: error: rank 1 of 2 failed with exit code 1: ")
    assert "RuntimeError: injected failure on rank 1 at iteration 2" in last
    assert elapsed < 90  # no hang until a collective timeout


def test_taken_port_is_a_one_line_error(tmp_path):
    run = run_file(tmp_path / "r.toml", batch_size=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = train(run, tmp_path / "w", "--nproc", "2", "--set", f"dist.port={port}", timeout=60)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"detcore: error: port {port} (dist.port) is already in use")
    assert "--set dist.port=" in lines[0]
    assert not (tmp_path / "w").exists()


def _run_timed(run: Path, work_dir: Path, marker: str, timeout: float = 300) -> tuple[int, str, float]:
    """Run a 2-process job; ``(exit status, stderr, seconds from the first
    stderr line containing ``marker`` to the job's exit)``."""
    import threading

    proc = start(run, work_dir, "--nproc", "2")
    seen: list[float] = []
    err_lines: list[str] = []

    def read_err():
        for line in proc.stderr:
            err_lines.append(line)
            if marker in line and not seen:
                seen.append(time.monotonic())

    reader = threading.Thread(target=read_err)
    reader.start()
    proc.stdout.read()  # drain
    proc.wait(timeout=timeout)
    reader.join()
    end = time.monotonic()
    assert seen, "".join(err_lines)[-3000:]
    return proc.returncode, "".join(err_lines), end - seen[0]


def _last_checkpoint_usable(work_dir: Path) -> None:
    from detcore.engine.checkpoint import find_resume

    found = find_resume(work_dir, log=lambda msg: None)
    assert found is not None and found[0].name == "iter_4.pth", sorted(p.name for p in work_dir.iterdir())
    assert found[1]["meta"]["iter"] == 4
    assert not [p for p in work_dir.iterdir() if ".tmp" in p.name]


def test_rank_failing_in_validation_ends_the_job_promptly_naming_it(tmp_path):
    """Issue 16 item 5: rank 1 raises in the validation after iteration 8;
    rank 0, waiting to gather, stops at once (not at a collective timeout,
    not SIGKILLed by the launcher), and the job names rank 1's error."""
    run = run_file(
        tmp_path / "valfail.toml", batch_size=2, hooks=[{"type": "fail_in_validation", "rank": 1, "at_iter": 8}]
    )
    rc, err, after = _run_timed(run, tmp_path / "w", "injected failure on rank 1 in validation")
    assert rc == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("detcore: error: rank 1 of 2 failed with exit code 1: "), last
    assert "RuntimeError: injected failure on rank 1 in validation at iteration 8" in last
    assert "[rank0]:detcore: error: stopped because rank 1 of 2 failed during validation: RuntimeError: injected" in err
    assert "SIGKILL" not in err and "Connection closed by peer" not in err
    # Was 32 s (the launcher's SIGTERM-to-SIGKILL grace); the workers now exit
    # themselves. Generous for a loaded 2-core machine: mostly interpreter exit.
    assert after < 20, after
    _last_checkpoint_usable(tmp_path / "w")


def test_rank_hanging_in_validation_is_named_not_reported_as_rank_0(tmp_path):
    """Rank 1 stops making progress in validation: rank 0 names it after
    dist.eval_timeout_s instead of failing with its own gloo timeout."""
    run = run_file(
        tmp_path / "valhang.toml", batch_size=2, hooks=[{"type": "hang_in_validation", "rank": 1, "at_iter": 8}],
        dist={"eval_timeout_s": 6},
    )
    rc, err, _ = _run_timed(run, tmp_path / "w", "rank 1 of 2 hung", timeout=400)
    assert rc == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("detcore: error: rank 1 of 2 hung: it did not finish validation within 6 s "
                           "(dist.eval_timeout_s), while rank 0 did."), last
    assert "rank 0 of 2 failed" not in last
    _last_checkpoint_usable(tmp_path / "w")
