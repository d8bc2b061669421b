"""Checkpoint integrity (issue 16, item 3): every checkpoint carries a digest
of its contents; a file damaged after it was written is skipped by
``--resume auto`` and is a named error for test, predict and load_from.
The damage is the one torch.load does not notice: 4 KB flipped in the middle
of a tensor record of the zip archive."""

from __future__ import annotations

import shutil
import struct
import sys
import zipfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "runner_plugins"))

from runner_testutil import VAL, cli, cli_subprocess, write_run  # noqa: E402

from detcore.engine.checkpoint import find_resume, read_checkpoint  # noqa: E402
from detcore.engine.integrity import payload_digest, seal, verify  # noqa: E402
from detcore.errors import CheckpointError  # noqa: E402

WIDE = ("--set", "model.width=64")  # conv weights of 147 KB: room for a 4 KB flip inside one


def flip_4k_in_largest_tensor(path: Path, n: int = 4096) -> str:
    """XOR ``n`` bytes in the middle of the largest record of the checkpoint's
    zip archive (a tensor's bytes); returns the record's name."""
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    assert info.file_size > n
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - n // 2
        f.seek(start)
        data = f.read(n)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in data))
    return info.filename


def test_seal_survives_torch_save_and_weights_only_load(tmp_path):
    ckpt = {
        "detcore": {"format": 1},
        "meta": {"iter": 3, "lr": 0.01, "names": ["a", "b"], "pair": (1, 2.5), "none": None, "flag": True},
        "model": {
            "w": torch.randn(4, 3).t(),  # not contiguous
            "b": torch.randn(5, dtype=torch.bfloat16),
            "n": torch.tensor(7),  # 0-dim
            "e": torch.empty(0, 3),
        },
    }
    path = tmp_path / "c.pth"
    torch.save(seal(ckpt), path)
    loaded = torch.load(path, weights_only=True)
    assert verify(loaded, path) is True
    assert loaded["integrity"]["sha256"] == payload_digest(ckpt)
    # Any change to a tensor or to plain data is a mismatch.
    for change in (lambda c: c["model"]["w"][0, 0].add_(1), lambda c: c["meta"].update(iter=4)):
        bad = torch.load(path, weights_only=True)
        change(bad)
        with pytest.raises(CheckpointError, match=r"c\.pth': checksum mismatch"):
            verify(bad, path)
    # Types count: (1, 2.5) and [1, 2.5] differ, 1 and 1.0 and "1" differ.
    assert len({payload_digest(x) for x in ((1, 2.5), [1, 2.5], 1, 1.0, "1")}) == 5


def test_a_checkpoint_without_digest_loads_unverified(tmp_path):
    # Checkpoints written before the digest existed still load.
    path = tmp_path / "old.pth"
    torch.save({"detcore": {"format": 1}, "meta": {"iter": 1}, "model": {"w": torch.ones(2)}}, path)
    ckpt = read_checkpoint(path)
    assert "integrity" not in ckpt and verify(ckpt, path) is False


def test_auto_resume_skips_a_bit_flipped_checkpoint(tmp_path, capsys):
    run = write_run(tmp_path, train={"max_iters": 4}, checkpoint={"interval": 2})
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), *WIDE) == 0
    newest = tmp_path / "w" / "iter_4.pth"
    good = torch.load(newest, weights_only=True)
    flip_4k_in_largest_tensor(newest)
    # The trigger: torch loads the damaged file without complaint...
    damaged = torch.load(newest, weights_only=True)
    changed = sum(int((damaged["model"][k] != good["model"][k]).sum()) for k in good["model"])
    assert changed == 1024 or damaged["optimizer"] != good["optimizer"]
    # ...detcore does not.
    found = find_resume(tmp_path / "w", log=lambda m: print(m))
    assert found is not None and found[0].name == "iter_2.pth"
    out = capsys.readouterr().out
    assert f"auto-resume: skipping {newest}" in out and "checksum mismatch" in out

    run6 = write_run(tmp_path, train={"max_iters": 6}, checkpoint={"interval": 2}, name="run6.toml")
    assert cli("train", str(run6), "--work-dir", str(tmp_path / "w"), *WIDE, "--resume", "auto") == 0
    out = capsys.readouterr().out
    assert "checksum mismatch" in out and f"resumed from {tmp_path / 'w' / 'iter_2.pth'}" in out
    assert read_checkpoint(tmp_path / "w" / "iter_6.pth")["meta"]["iter"] == 6


@pytest.mark.slow
def test_test_predict_and_load_from_refuse_a_bit_flipped_checkpoint(tmp_path):
    run = write_run(tmp_path, VAL, train={"max_iters": 2}, checkpoint={"interval": 2})
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), *WIDE, "--no-validate") == 0
    corrupt = tmp_path / "corrupt.pth"
    shutil.copy(tmp_path / "w" / "iter_2.pth", corrupt)
    flip_4k_in_largest_tensor(corrupt)

    for argv in (
        ["test", str(run), "--checkpoint", str(corrupt), *WIDE],
        ["train", str(run), "--work-dir", str(tmp_path / "ft"), "--load-from", str(corrupt), *WIDE],
    ):
        proc = cli_subprocess(*argv, cwd=tmp_path)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"detcore: error: checkpoint '{corrupt}': checksum mismatch"), proc.stderr
    assert not (tmp_path / "ft" / "iter_2.pth").exists()
    # predict reads it through the same loader.
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        from detcore.engine.inference import load_model
        from detcore.runfile import load_run

        load_model(load_run(run, list(WIDE[1:])), str(corrupt), "cpu")
