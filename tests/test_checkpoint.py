"""Checkpoint files: weights_only-safe contents, atomic writes, auto-resume
past bad files, load_from with a report, class names in every checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "runner_plugins"))

from runner_testutil import VAL, cli, write_run  # noqa: E402

from detcore.engine import checkpoint as ck  # noqa: E402
from detcore.errors import CheckpointError  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run with validation: interval checkpoints and a best one."""
    d = tmp_path_factory.mktemp("trained")
    run = write_run(d, VAL, train={"max_epochs": 2}, checkpoint={"save_best": "score"})
    assert cli("train", str(run), "--work-dir", str(d / "w")) == 0
    return d / "w"


def test_every_checkpoint_kind_is_weights_only_safe(trained):
    files = sorted(trained.glob("*.pth"))
    names = {p.name for p in files}
    assert {"epoch_1.pth", "epoch_2.pth"} <= names
    assert any(n.startswith("best_score_") for n in names)
    for p in files:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(str(p)) == [], p
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        assert ck.is_detcore_checkpoint(ckpt)
        meta = ckpt["meta"]
        assert meta["class_names"] == ["class0", "class1", "class2"]
        assert len(meta["palette"]) == 3 and all(len(c) == 3 for c in meta["palette"])
        assert "[model]" in meta["run_file"] and meta["model_type"] == "tiny_det"
        for key in ("optimizer", "lr_scheduler", "rng", "sampler", "hooks"):
            assert key in ckpt
    # The best checkpoint is the one with the highest scripted score (0.9 at epoch 2).
    pointer = json.loads((trained / "latest.json").read_text())
    assert pointer["checkpoint"] == "epoch_2.pth" and pointer["best"] == "best_score_epoch_2.pth"
    assert not (trained / "best_score_epoch_1.pth").exists()


def test_scaler_and_rng_states_are_plain_data(tmp_path):
    scaler = torch.amp.GradScaler("cpu")
    ckpt = ck.new_checkpoint({"epoch": 0})
    ckpt.update(model={"w": torch.ones(2)}, scaler=scaler.state_dict(), rng=ck.get_rng_state())
    ck.atomic_save(ckpt, tmp_path / "x.pth")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "x.pth")) == []
    loaded = ck.read_checkpoint(tmp_path / "x.pth")
    a = torch.rand(3)
    ck.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), a)


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "iter_1.pth"
    ck.atomic_save({"model": {"w": torch.zeros(3)}}, target)

    def broken_save(obj, f, *a, **kw):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ck.atomic_save({"model": {"w": torch.ones(3)}}, target)
    monkeypatch.undo()
    assert torch.equal(ck.read_checkpoint(target)["model"]["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["iter_1.pth"]


def test_keep_last_n(tmp_path):
    files = ck.CheckpointFiles(tmp_path, keep=2)
    for i in range(1, 5):
        files.save(ck.new_checkpoint({"iter": i}) | {"model": {}}, f"iter_{i}.pth")
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["iter_3.pth", "iter_4.pth"]
    assert json.loads((tmp_path / "latest.json").read_text())["history"] == ["iter_3.pth", "iter_4.pth"]


def test_auto_resume_skips_truncated_and_foreign_newest(tmp_path):
    run = write_run(tmp_path, train={"max_iters": 3})
    w = tmp_path / "w"
    # Nothing to resume from yet: --resume auto starts from scratch.
    assert cli("train", str(run), "--work-dir", str(w), "--resume", "auto") == 0
    assert "no checkpoint in" in next(w.glob("*.log")).read_text()
    assert [p.name for p in sorted(w.glob("iter_*.pth"))] == ["iter_1.pth", "iter_2.pth", "iter_3.pth"]
    data = (w / "iter_3.pth").read_bytes()
    (w / "iter_3.pth").write_bytes(data[: len(data) // 2])
    found = ck.find_resume(w, log=(msgs := []).append)
    assert found is not None and found[0].name == "iter_2.pth"
    assert "iter_3.pth" in msgs[0] and "truncated" in msgs[0]
    # A foreign file (plain state dict) newer than everything is skipped too.
    torch.save({"w": torch.zeros(1)}, w / "iter_9.pth")
    found = ck.find_resume(w, log=(msgs := []).append)
    assert found[0].name == "iter_2.pth"
    assert any("iter_9.pth" in m and "not a detcore training checkpoint" in m for m in msgs)
    # The CLI continues from iteration 2 to 3 and says why it skipped.
    run = write_run(tmp_path, train={"max_iters": 4})
    assert cli("train", str(run), "--work-dir", str(w), "--resume", "auto") == 0
    log = "\n".join(p.read_text() for p in w.glob("*.log"))  # both runs' logs
    assert "skipping" in log and "iter_3.pth" in log and "resumed from" in log and "iter_2.pth" in log
    assert ck.read_checkpoint(w / "iter_4.pth")["meta"]["iter"] == 4


def test_resume_from_a_bad_path_is_a_clear_error(tmp_path, capsys):
    run = write_run(tmp_path, train={"max_iters": 1})
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), "--resume", str(tmp_path / "bad.pth")) == 1
    err = capsys.readouterr().err
    assert "bad.pth" in err and "cannot be loaded" in err and "Traceback" not in err
    torch.save({"w": torch.zeros(1)}, tmp_path / "sd.pth")
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), "--resume", str(tmp_path / "sd.pth")) == 1
    assert "--load-from" in capsys.readouterr().err


def _tiny(num_classes):
    from runner_testkit import tiny_det

    torch.manual_seed(num_classes)
    return tiny_det(num_classes)


def test_load_from_with_other_num_classes_reports_heads(tmp_path, capsys):
    src = _tiny(5)
    # A plain state dict, as torchvision publishes, and a DDP-prefixed one.
    torch.save(src.state_dict(), tmp_path / "plain.pth")
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, tmp_path / "ddp.pth")
    for f in ("plain.pth", "ddp.pth"):
        dst = _tiny(3)
        report = ck.load_weights(dst, tmp_path / f)
        skipped = {k for k, _, _ in report.skipped_shape}
        assert skipped == {"head.cls_logits.weight", "head.cls_logits.bias"}
        for k, v in dst.state_dict().items():
            if k not in skipped:
                assert torch.equal(v, src.state_dict()[k]), k
        assert not torch.equal(dst.head["cls_logits"].bias, src.head["cls_logits"].bias[:3])
    # Through the CLI: the report is printed and logged.
    run = write_run(tmp_path, train={"max_iters": 1})
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), "--load-from", str(tmp_path / "plain.pth")) == 0
    out = capsys.readouterr().out
    assert "2 skipped for shape" in out and "head.cls_logits.weight" in out


def test_load_from_detcore_checkpoint_and_foreign_files(tmp_path):
    src = _tiny(3)
    ckpt = ck.new_checkpoint({"class_names": ["a", "b", "c"]}) | {"model": src.state_dict()}
    ck.atomic_save(ckpt, tmp_path / "det.pth")
    dst = _tiny(3)
    report = ck.load_weights(dst, tmp_path / "det.pth")
    assert not report.skipped_shape and not report.missing and len(report.loaded) == len(src.state_dict())
    torch.save({"other.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="another architecture"):
        ck.load_weights(_tiny(3), tmp_path / "other.pth")
    (tmp_path / "trunc.pth").write_bytes((tmp_path / "det.pth").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="trunc.pth"):
        ck.load_weights(_tiny(3), tmp_path / "trunc.pth")


def test_class_names_checked_against_test_dataset(trained):
    from detcore.data.synthetic import SyntheticDataset

    path = trained / "epoch_2.pth"
    ck.check_checkpoint_classes(path, SyntheticDataset(2, (32, 32), 3))
    with pytest.raises(CheckpointError) as err:
        ck.check_checkpoint_classes(path, SyntheticDataset(2, (32, 32), classes=["class0", "cat", "class2"]))
    msg = str(err.value)
    assert "['class0', 'class1', 'class2']" in msg and "['class0', 'cat', 'class2']" in msg

    class WithIds(SyntheticDataset):
        cat_ids = [1, 2, 3]

    saved = {"meta": {"class_names": ["class0", "class1", "class2"], "cat_ids": [1, 2, 5]}}
    with pytest.raises(CheckpointError, match=r"\[1, 2, 5\].*\[1, 2, 3\]"):
        ck.check_checkpoint_classes(saved, WithIds(2, (32, 32), 3), name="x.pth")


def test_resume_with_other_classes_is_refused(trained, tmp_path, capsys):
    # The training set's classes named instead of counted (None: left out of the file).
    run = write_run(tmp_path, train={"max_epochs": 3}, data={"train": {"num_classes": None, "classes": ["x", "y", "z"]}})
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w"), "--resume", str(trained / "epoch_2.pth")) == 1
    err = capsys.readouterr().err
    assert "['class0', 'class1', 'class2']" in err and "['x', 'y', 'z']" in err


def test_num_batches_tracked_is_not_reported_unexpected():
    """BatchNorm files hold num_batches_tracked; a FrozenBatchNorm2d model has none."""
    from torchvision.ops import FrozenBatchNorm2d

    from detcore.weights import load_matching

    src = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    dst = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), FrozenBatchNorm2d(4))
    report = load_matching(dst, src.state_dict(), "bn.pth")
    assert report.unexpected == () and report.missing == ()
    assert "1.num_batches_tracked" not in report.summary()
    extra = src.state_dict() | {"other.weight": torch.zeros(1)}
    assert load_matching(dst, extra, "bn.pth").unexpected == ("other.weight",)


def test_load_from_checks_the_fit_of_a_model_naming_its_class_layers(tmp_path):
    """A detector with ``class_layers`` may differ from the file only there."""
    src = _tiny(5)
    torch.save(src.state_dict(), tmp_path / "full.pth")
    torch.save({k: v for k, v in src.state_dict().items() if not k.startswith("head.tower")}, tmp_path / "part.pth")
    dst = _tiny(3)
    dst.class_layers = ("head.cls_logits",)
    report = ck.load_weights(dst, tmp_path / "full.pth")
    assert {k for k, _, _ in report.skipped_shape} == {"head.cls_logits.weight", "head.cls_logits.bias"}
    with pytest.raises(CheckpointError, match=r"load_from .*part.pth.*head.tower.weight"):
        ck.load_weights(dst, tmp_path / "part.pth")
    # Without class_layers the same file loads partly, with a report.
    assert "head.tower.weight" in ck.load_weights(_tiny(3), tmp_path / "part.pth").missing


def test_best_checkpoint_of_a_metric_with_odd_characters_replaces_the_last(tmp_path):
    """A plugin metric named like ``AP@50``: the name the runner remembers is
    the file written, so the previous best is removed, not left behind."""
    files = ck.CheckpointFiles(tmp_path)
    first = ck.best_name("AP@50", "epoch_1")
    assert files.save_best({"model": {}}, "AP@50", "epoch_1", None) == first
    second = files.save_best({"model": {}}, "AP@50", "epoch_2", first)
    assert second == ck.best_name("AP@50", "epoch_2")
    assert sorted(p.name for p in tmp_path.glob("best_*")) == [second]


def test_a_file_without_weights_is_a_clear_error():
    with pytest.raises(CheckpointError, match="holds no model weights"):
        ck.weights_of({"epoch": 3, "note": "no tensors here"}, "notes.pth")


def test_nproc_below_one_is_a_clear_error():
    from detcore.engine import dist
    from detcore.errors import DetcoreError

    with pytest.raises(DetcoreError, match="--nproc must be at least 1, got 0"):
        dist.launch_local(0, ["train", "run.toml", "--nproc", "0"])
