"""A full disk while training writes its files (issue 16, item 6), on a real
small tmpfs: one ``detcore: error:`` paragraph naming the file, the space it
needed and the checkpoint still intact, and nothing half-written left behind.
Needs ``mount -t tmpfs`` (root); skipped where mounting is not permitted."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from detcore.testing import assert_user_error, run_detcore, tiny_run, write_runfile

# A checkpoint of this model is about 11 MB: a 16 MB disk holds one, not two.
SMALL = {"model": {"neck": {"type": "fpn", "out_channels": 32}}}


@pytest.fixture
def tmpfs(tmp_path):
    """A mounted tmpfs of the size asked for, unmounted after the test."""
    mounted = []

    def mount(size: str):
        d = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
        d.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def train(tmp_path, run: dict, *extra) -> subprocess.CompletedProcess:
    write_runfile(tmp_path / "run.toml", run)
    return run_detcore("train", "run.toml", *extra, cwd=tmp_path, timeout=600)


def _one_error(proc) -> str:
    err = assert_user_error(proc, 1)
    assert "Logging error" not in err and "no space left on the device" not in proc.stdout, err[-3000:]
    return err


@pytest.mark.slow
def test_checkpoint_that_does_not_fit_keeps_the_previous_one(tmp_path, tmpfs):
    disk = tmpfs("16m")
    run = tiny_run(SMALL, work_dir=str(disk / "w"), train={"max_iters": 4}, checkpoint={"interval": 2, "keep": 2})
    err = _one_error(train(tmp_path, run))
    w = disk / "w"
    assert f"while writing checkpoint '{w / 'iter_4.pth'}' (it needs about 10." in err and "MB free there)" in err
    assert f"The previous checkpoint '{w / 'iter_2.pth'}' is intact" in err
    assert f"then resume: detcore train run.toml --resume {w / 'iter_2.pth'}" in err
    # No partial file or temporary left; the previous checkpoint loads and verifies.
    assert sorted(p.name for p in w.glob("*.pth*")) == ["iter_2.pth"]
    assert not [p for p in w.iterdir() if ".tmp" in p.name]
    from detcore.weights import read_checkpoint

    assert read_checkpoint(w / "iter_2.pth")["meta"]["iter"] == 2
    assert json.loads((w / "latest.json").read_text())["checkpoint"] == "iter_2.pth"
    # The log file says it too (the console only once, as the error).
    log = next(w.glob("*.log")).read_text()
    assert "no space left on the device while writing checkpoint" in log


FILLER = '''
import detcore


@detcore.hookimpl
def detcore_after_train_iter(runner, iteration, losses):
    """Fill the work dir's disk after the second iteration."""
    if runner.iter == 2:
        with open(runner.work_dir / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"x" * 65536)
                    f.flush()
            except OSError:
                pass
'''


@pytest.mark.slow
def test_scalars_file_on_a_full_disk_is_one_error_and_no_half_line(tmp_path, tmpfs):
    disk = tmpfs("4m")
    (tmp_path / "disk_filler.py").write_text(FILLER)
    run = tiny_run(SMALL, plugins=["disk_filler"], work_dir=str(disk / "w"), train={"max_iters": 200},
                   checkpoint={"interval": 1000})
    err = _one_error(train(tmp_path, run))
    w = disk / "w"
    assert f"while writing the scalars file '{w / 'scalars.jsonl'}' (it needs about " in err
    assert "0 bytes free there" in err and "No checkpoint had been written yet." in err
    assert err.strip().endswith("then start the run again.")
    lines = (w / "scalars.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["iter"] for line in lines)  # every line whole


@pytest.mark.slow
def test_full_disk_before_the_first_iteration_is_one_error(tmp_path, tmpfs):
    """Nothing fits, not even the work dir's lock file."""
    disk = tmpfs("8k")
    (disk / "filler").write_bytes(b"x" * 8192)
    err = _one_error(train(tmp_path, tiny_run(SMALL, work_dir=str(disk / "w"))))
    assert f"while writing the work dir's lock file '{disk / 'w' / '.detcore.lock'}' (0 bytes free there)" in err
