"""Messages that used to send the user the wrong way (issue 16, item 10),
through the real CLI: a foreign checkpoint file, a folder given as
``--checkpoint``, ``train --resume RUN.toml``, and a checkpoint of another
detector."""

from __future__ import annotations

import pytest
import torch

from detcore.testing import assert_user_error, run_detcore, tiny_run, write_runfile

VAL = {"data": {"val": {"type": "synthetic", "num_images": 2, "image_size": 64, "num_classes": 3}}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-iteration fcos run (3 classes) and its work dir."""
    d = tmp_path_factory.mktemp("msgs")
    write_runfile(d / "run.toml", tiny_run(VAL, work_dir="w"))
    from PIL import Image

    Image.new("RGB", (64, 64), (90, 120, 150)).save(d / "x.jpg")  # for predict
    proc = run_detcore("train", "run.toml", cwd=d)
    assert proc.returncode == 0, proc.stderr
    ckpts = sorted((d / "w").glob("iter_*.pth"))
    assert ckpts, list((d / "w").iterdir())
    return d, ckpts[-1]


@pytest.mark.slow
def test_a_pickled_model_is_refused_saying_what_detcore_expects(trained):
    d, _ = trained
    torch.save(torch.nn.Linear(2, 2), d / "model.pth")  # a whole module, pickled by class
    err = assert_user_error(run_detcore("test", "run.toml", "--checkpoint", "model.pth", cwd=d), 1)
    assert "checkpoint 'model.pth' is not a detcore checkpoint: it holds pickled Python objects" in err
    assert "torch.nn.modules.linear.Linear" in err
    assert "detcore expects a checkpoint written by 'detcore train'" in err
    assert "torch.save(model.state_dict())" in err
    # torch's own advice (run the file's code) is never passed on, nor cut mid-sentence.
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err
    assert "Do it only if" not in err and "you got the file" not in err

    (d / "notes.pth").write_text("not a checkpoint\n" * 5)
    err = assert_user_error(run_detcore("test", "run.toml", "--checkpoint", "notes.pth", cwd=d), 1)
    assert "checkpoint 'notes.pth' cannot be loaded" in err and "not a PyTorch file" in err
    assert "detcore expects a checkpoint written by 'detcore train'" in err


@pytest.mark.slow
def test_checkpoint_folder_is_named_as_a_folder_with_its_checkpoints(trained):
    d, ckpt = trained
    err = assert_user_error(run_detcore("test", "run.toml", "--checkpoint", "w", cwd=d), 1)
    assert "does not exist" not in err
    assert f"checkpoint 'w' is a folder, not a file; give one of its checkpoints (newest first): 'w/{ckpt.name}'" in err
    (d / "empty").mkdir()
    err = assert_user_error(run_detcore("predict", "run.toml", "--checkpoint", "empty", "x.jpg", "--out-dir", "vis", cwd=d), 1)
    assert "checkpoint 'empty' is a folder with no checkpoint (.pth) in it" in err


@pytest.mark.slow
def test_train_resume_followed_by_the_run_file_resumes(trained):
    d, ckpt = trained
    proc = run_detcore("train", "--resume", "run.toml", cwd=d)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert f"resumed from w/{ckpt.name}" in out, out[-3000:]
    err = assert_user_error(run_detcore("train", "run.toml", "--resume", "other.toml", cwd=d), 2)
    assert "--resume other.toml: that is a run file, not a checkpoint" in err
    assert "detcore train run.toml --resume auto" in err


def test_resume_value_that_is_a_run_file_becomes_the_run_file():
    import argparse

    from detcore.cli import train
    from detcore.errors import UsageError

    parser = argparse.ArgumentParser()
    train.configure(parser)
    args = parser.parse_args(["--resume", "run.toml"])
    assert (args.runfile, args.resume) == (None, "run.toml")  # what argparse alone does
    train.fix_resume_runfile(args)
    assert (args.runfile, args.resume) == ("run.toml", "auto")
    args = parser.parse_args(["run.toml", "--resume", "w/iter_2.pth"])
    train.fix_resume_runfile(args)
    assert (args.runfile, args.resume) == ("run.toml", "w/iter_2.pth")
    with pytest.raises(UsageError, match="the run file is missing"):
        train.fix_resume_runfile(parser.parse_args(["--resume"]))


@pytest.mark.slow
def test_checkpoint_of_another_detector_names_its_type_and_run_file(trained):
    d, ckpt = trained
    other = tiny_run(VAL, {"model": {"type": "retinanet", "num_classes": 5, "backbone": {"type": "tiny"}}})
    other["data"]["val"]["num_classes"] = 5
    write_runfile(d / "other.toml", other)
    for command in (["test"], ["predict", "x.jpg", "--out-dir", "vis"]):
        err = assert_user_error(run_detcore(*command[:1], "other.toml", "--checkpoint", f"w/{ckpt.name}", *command[1:], cwd=d), 1)
        assert f"checkpoint 'w/{ckpt.name}' is a 'fcos' detector (3 classes: class0, class1, class2)" in err
        assert "its run file is 'w/resolved.toml'" in err and "other.toml builds a 'retinanet'" in err
        assert "classes" not in err.split("but", 1)[1]  # not reported as a class-name problem
