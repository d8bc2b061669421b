"""A 32-channel FCOS (GroupNorm(32): one channel per group, a 1x1 P7 on
small images) predicts a single image and validates on 2 gloo ranks whose
split leaves one rank a last batch of one image (issue 18, item 5). Real
subprocesses: ``detcore train --nproc 2``, then ``detcore predict``."""

from __future__ import annotations

import functools
import json
import os

import pytest

from detcore.testing import read_scalars, run_detcore

pytestmark = pytest.mark.slow

pytest.importorskip("detcore_coco", reason="uses the coco dataset and metric of detcore-coco")

# Two ranks train on two shared cores: allow more than the default timeout.
detcore = functools.partial(run_detcore, env={"PYTHONWARNINGS": "ignore"}, timeout=600)


def test_fcos_32_channels_validates_on_an_odd_split_over_two_ranks_and_predicts_one_image(tmp_path, shapes_run):
    r = detcore("coco", "make-shapes", "shapes", "--train", 4, "--val", 17, "--size", 64, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (tmp_path / "run.toml").write_text(shapes_run(
        model={"backbone": {"width": 8}, "neck": {"out_channels": 32}},
        train={"max_iters": 2, "val_interval": 2}, checkpoint={"interval": 2},
    ))
    # 17 val images on 2 ranks, 2 per batch: one rank ends on a batch of one
    r = detcore("train", "run.toml", "--nproc", 2, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    val = read_scalars(tmp_path / "work", "val")
    assert val and "bbox_mAP" in val[-1]

    r = detcore("predict", "run.toml", "--checkpoint", "work/iter_2.pth", "shapes/val/000000.jpg",
                "--out-dir", "pred", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    record = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert [os.path.basename(i["file"]) for i in record["images"]] == ["000000.jpg"]
