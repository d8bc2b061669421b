"""One run per work dir (issue 16, items 1 and 4): a live run holds a lock, a
new run is refused over a run that trained there unless it resumes, a lock
or temporary file left by a killed process blocks nothing and is cleaned up,
and no run deletes or overwrites another's files. Real ``detcore train``
processes, real SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "runner_plugins"))

from runner_testutil import HERE, cli, write_run  # noqa: E402

from detcore.engine.checkpoint import CheckpointFiles, find_resume  # noqa: E402
from detcore.engine.workdir import (  # noqa: E402
    LOCK_NAME,
    WorkDirError,
    WorkDirLock,
    claim,
    remove_stale_temp_files,
)
from detcore.testing import read_scalars, run_detcore, start_detcore  # noqa: E402

# A runner hook that holds a run after an iteration until the test says go:
# the test can act while the run is certainly alive and mid-training.
GATE = '''\
import time
from pathlib import Path

from detcore import hookimpl


class Gate:
    def __init__(self, at_iter, folder):
        self.at_iter, self.folder = at_iter, Path(folder)

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, losses):
        if runner.iter == self.at_iter:
            (self.folder / "waiting").touch()
            deadline = time.time() + 180
            while not (self.folder / "go").exists() and time.time() < deadline:
                time.sleep(0.05)


def gate(at_iter: int, folder: str):
    """Wait after iteration ``at_iter`` until ``folder/go`` exists."""
    return Gate(at_iter, folder)


@hookimpl
def detcore_runner_hooks():
    return {"gate": gate}
'''


def write_gate_run(tmp_path: Path, name: str, max_iters: int, **changes) -> Path:
    """A run that can load ``fx_gate`` (next to it); checkpoints every 2
    iterations, the newest 2 kept."""
    return write_run(tmp_path, name=name, train={"max_iters": max_iters}, plugins=["runner_testkit", "detcore.testing", "fx_gate"],
                     checkpoint={"interval": 2, "keep": 2}, **changes)


def make_runs(tmp_path: Path, *, max_iters: int = 6) -> tuple[Path, Path]:
    """``gated.toml`` (stops after iteration 3 until ``go``) and ``plain.toml``."""
    (tmp_path / "fx_gate.py").write_text(GATE)
    plain = write_gate_run(tmp_path, "plain.toml", max_iters)
    gate = {"type": "gate", "at_iter": 3, "folder": tmp_path.as_posix()}
    return write_gate_run(tmp_path, "gated.toml", max_iters, hooks=[gate]), plain


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}): {proc.stderr.read()}")
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------
# the lock and the clean-up, in this process
# ----------------------------------------------------------------------


def test_lock_names_its_holder_and_a_dead_holder_blocks_nothing(tmp_path):
    w = tmp_path / "w"
    with WorkDirLock(w) as lock:
        holder = json.loads((w / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(WorkDirError) as info:
            WorkDirLock(w).acquire()  # a second open file: flock refuses it
        assert f"in use by another detcore run: pid {os.getpid()} on host {socket.gethostname()}" in str(info.value)
        assert lock.held
    assert not (w / LOCK_NAME).exists()
    # A lock file whose writer was killed (flock gone with the process, its
    # details left behind) does not block.
    (w / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    with WorkDirLock(w):
        assert json.loads((w / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_lock_without_flock_uses_pid_and_host(tmp_path):
    # File systems without flock: the lock file alone, stale when its pid is
    # gone on this host; another host's lock cannot be checked and blocks.
    w = tmp_path / "w"
    w.mkdir()
    lock = WorkDirLock(w)
    (w / LOCK_NAME).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    lock._acquire_by_pid()
    assert json.loads((w / LOCK_NAME).read_text())["pid"] == os.getpid()
    with pytest.raises(WorkDirError, match=f"pid {os.getpid()} on host"):
        WorkDirLock(w)._acquire_by_pid()
    lock.release()
    (w / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(WorkDirError, match=f"pid 1 on host elsewhere.*delete {w / LOCK_NAME}"):
        WorkDirLock(w)._acquire_by_pid()


def test_a_killed_checkpoint_write_leaves_a_temp_file_the_next_run_removes(tmp_path):
    # A real writer, SIGKILLed while its checkpoint is written (blocked in
    # fsync, after the bytes and before the rename).
    w = tmp_path / "w"
    code = textwrap.dedent(
        f"""
        import os, time, torch
        from pathlib import Path
        from detcore.engine.checkpoint import atomic_save
        def fsync(fd):
            Path({str(tmp_path)!r}, "in_fsync").touch()
            time.sleep(600)
        os.fsync = fsync
        atomic_save({{"model": {{"w": torch.zeros(1000)}}}}, Path({str(w)!r}) / "iter_8.pth")
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (tmp_path / "in_fsync").exists():
        assert writer.poll() is None and time.time() < deadline
        time.sleep(0.05)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    left = w / f".iter_8.pth.tmp{writer.pid}"
    assert left.exists() and not (w / "iter_8.pth").exists()
    # Never counted as a checkpoint.
    assert CheckpointFiles(w).candidates() == [] and find_resume(w) is None
    # A live writer's file stays (this process's parent is alive).
    live = w / f".iter_9.pth.tmp{os.getppid()}"
    live.write_bytes(b"x")
    lock, removed = claim(w, resume=None)
    lock.release()
    assert removed == [left] and not left.exists() and live.exists()
    assert remove_stale_temp_files(w) == []


def test_resuming_from_another_folder_does_not_continue_the_run_here(tmp_path):
    # --resume PATH continues the run in PATH's folder; into a work dir that
    # holds another run it would rotate that run's checkpoints away.
    w, other = tmp_path / "w", tmp_path / "other"
    w.mkdir()
    (w / "iter_2.pth").write_bytes(b"x")
    with pytest.raises(WorkDirError, match=r"already holds a run \(1 checkpoint file\(s\), the newest iter_2.pth; .*\); a new run there "
                       r"\(resuming from .*other/iter_2.pth, which is not in it\) would overwrite"):
        claim(w, resume=str(other / "iter_2.pth"))
    for resume in ("auto", str(w / "iter_2.pth")):
        lock, _ = claim(w, resume=resume)
        lock.release()
    # An empty work dir takes a run resumed from anywhere.
    lock, _ = claim(tmp_path / "new", resume=str(other / "iter_2.pth"))
    lock.release()


def test_a_second_run_after_a_finished_one_is_refused_unless_it_resumes(tmp_path, capsys):
    _, plain = make_runs(tmp_path, max_iters=4)
    w = tmp_path / "w"
    assert cli("train", str(plain), "--work-dir", str(w)) == 0
    before = snapshot(w)
    capsys.readouterr()
    assert cli("train", str(plain), "--work-dir", str(w)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"detcore: error: work dir {w} already holds a run")
    assert "(2 checkpoint file(s), the newest iter_4.pth; last written " in err and "--resume auto" in err
    assert snapshot(w) == before  # not one byte written, no log file added
    # --resume auto continues that run from its newest checkpoint.
    more = write_gate_run(tmp_path, "more.toml", 6)
    assert cli("train", str(more), "--work-dir", str(w), "--resume", "auto") == 0
    assert f"resumed from {w / 'iter_4.pth'}" in capsys.readouterr().out
    assert [r["iter"] for r in read_scalars(w, "train")] == [1, 2, 3, 4, 5, 6]


def test_detcore_tester_gives_each_new_run_its_own_work_dir(tmp_path):
    # The public pytest helper: two trainings of one run file keep both runs;
    # resume="auto" continues the last.
    from detcore.testing import DetcoreTester, tiny_run

    tester = DetcoreTester(tmp_path)
    first = tester.train(tiny_run(), iters=1)
    second = tester.train(tiny_run(), iters=1)
    assert (first.work_dir.name, second.work_dir.name) == ("work_dir", "work_dir_2")
    again = tester.train(tiny_run(), iters=2, resume="auto")
    assert again.work_dir == second.work_dir and again.runner.iter == 2
    assert [r["iter"] for r in first.scalars() if r.get("mode") == "train"] == [1]


# ----------------------------------------------------------------------
# real concurrent `detcore train` processes
# ----------------------------------------------------------------------


@pytest.mark.slow
def test_two_live_runs_in_one_work_dir(tmp_path):
    gated, plain = make_runs(tmp_path)
    w = tmp_path / "w"
    first = start_detcore("train", str(gated), "--work-dir", "w", cwd=tmp_path, plugin_paths=[HERE])
    try:
        wait_for(tmp_path / "waiting", first)  # alive, after iteration 3, iter_2.pth written
        during = snapshot(w)
        second = run_detcore("train", str(plain), "--work-dir", "w", cwd=tmp_path, plugin_paths=[HERE])
        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stderr.count("\n") == 1, second.stderr
        assert second.stderr.startswith(
            f"detcore: error: work dir w is in use by another detcore run: pid {first.pid} on host {socket.gethostname()}"
        )
        # Resuming is refused the same way while the run is alive.
        again = run_detcore("train", str(plain), "--work-dir", "w", "--resume", "auto", cwd=tmp_path, plugin_paths=[HERE])
        assert again.returncode == 1
        assert snapshot(w) == during
    finally:
        (tmp_path / "go").touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    # The first run's files are its own: 6 iterations logged once, keep = 2.
    assert [r["iter"] for r in read_scalars(w, "train")] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in w.glob("*.pth")) == ["iter_4.pth", "iter_6.pth"]
    assert not (w / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_sigkilled_run_blocks_nothing(tmp_path):
    gated, plain = make_runs(tmp_path)
    k = tmp_path / "k"
    victim = start_detcore("train", str(gated), "--work-dir", "k", cwd=tmp_path, plugin_paths=[HERE])
    wait_for(tmp_path / "waiting", victim)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert json.loads((k / LOCK_NAME).read_text())["pid"] == victim.pid  # left behind
    # A checkpoint write killed earlier left its temp file.
    stale = k / f".iter_4.pth.tmp{dead_pid()}"
    stale.write_bytes(b"\0" * 1000)
    # Not blocked by the lock: refused because the run there trained...
    fresh = run_detcore("train", str(plain), "--work-dir", "k", cwd=tmp_path, plugin_paths=[HERE])
    assert fresh.returncode == 1 and "already holds a run (1 checkpoint file(s), the newest iter_2.pth; last written" in fresh.stderr, fresh.stderr
    # ...and resumed from its checkpoint with --resume auto.
    resumed = run_detcore("train", str(plain), "--work-dir", "k", "--resume", "auto", cwd=tmp_path, plugin_paths=[HERE])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {Path('k') / 'iter_2.pth'}" in resumed.stdout
    assert f"removed {Path('k') / stale.name}" in resumed.stdout and not stale.exists()
    assert not (k / LOCK_NAME).exists()
    assert sorted(p.name for p in k.glob("*.pth")) == ["iter_4.pth", "iter_6.pth"]


# ----------------------------------------------------------------------
# docs/training.md, as written
# ----------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def doc_block(after: str, start_at: int = 0) -> tuple[str, int]:
    """The first fenced block after ``after`` (searched from ``start_at``)
    and where it ends."""
    text = DOC.read_text()
    i = text.index(after, start_at)
    start = text.index("\n", text.index("```", i)) + 1
    end = text.index("```", start)
    return text[start:end], end


@pytest.mark.slow
def test_training_md_work_dir_commands_run_as_written(tmp_path):
    first, _ = doc_block("## A first run")
    demo, end = doc_block("<!-- workdir-demo -->")
    expected, _ = doc_block("<!-- output -->", end)
    # The docs' commands call `detcore`: the one installed next to this python
    # (CI runs .venv/bin/python without activating the venv).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path}
    proc = subprocess.run(["bash", "-c", first], cwd=tmp_path, env=e, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    proc = subprocess.run(["bash", "-c", demo], cwd=tmp_path, env=e, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    lines = (proc.stderr + proc.stdout).splitlines()
    for want in expected.strip().splitlines():
        pattern = ".*".join(map(re.escape, want.split("...")))
        assert any(re.fullmatch(pattern, line) for line in lines), f"{want!r} not in:\n" + "\n".join(lines[-20:])
    # The second command trained in its own folder; the first run is untouched.
    assert (tmp_path / "work_dirs" / "synth_again" / "epoch_1.pth").exists()
    assert sorted(p.name for p in (tmp_path / "work_dirs" / "synth").glob("epoch_*.pth")) == ["epoch_5.pth", "epoch_6.pth"]
