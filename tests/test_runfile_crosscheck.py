"""Mistakes between the tables of a run file, caught by ``detcore config
check`` (a real subprocess) before training: metric names against the keys
the metrics declare, ``model.num_classes`` against the data's classes, a
mask detector on data without masks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from detcore.testing import run_detcore

pytest.importorskip("detcore_coco", reason="these run files use the coco dataset and metric")

from detcore_coco.shapes import make_shapes  # noqa: E402

RUN = """\
[model]
type = "{detector}"
num_classes = {num_classes}
backbone = {{ type = "tiny", width = 16 }}

[data.train]
type = "coco"
ann_file = "shapes/train.json"
img_dir = "shapes/train"
{train_extra}

[data.val]
type = "coco"
ann_file = "shapes/val.json"
img_dir = "shapes/val"

[train]
max_iters = 2

[checkpoint]
save_best = "{save_best}"

[[metrics]]
type = "coco"
{metric_extra}

[[hooks]]
type = "early_stopping"
metric = "{stop_on}"
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    make_shapes(str(root / "shapes"), train=4, val=2, size=64, seed=0)  # 3 classes
    return root


def check(root: Path, **fields) -> subprocess.CompletedProcess:
    values = dict(detector="fcos", num_classes=3, train_extra="", save_best="bbox_mAP", metric_extra="",
                  stop_on="bbox_mAP_50")
    values.update(fields)
    (root / "run.toml").write_text(RUN.format(**values))
    return run_detcore("config", "check", "run.toml", cwd=root)


def test_a_consistent_run_file_passes(root):
    r = check(root)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "warning" not in r.stderr


def test_save_best_must_be_a_key_the_metrics_return(root):
    r = check(root, save_best="bbox_map")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "key 'checkpoint.save_best'" in r.stderr and "did you mean 'bbox_mAP'" in r.stderr
    assert "bbox_mAP_50" in r.stderr  # the keys are listed


def test_early_stopping_metric_is_checked_the_same_way(root):
    r = check(root, stop_on="segm_mAP")
    assert r.returncode == 2
    assert "key 'hooks[0].metric'" in r.stderr and "'segm_mAP' is not a key" in r.stderr
    # with segm evaluated, the same name is fine; per-class names match the declared pattern
    assert check(root, stop_on="segm_mAP", metric_extra='iou_types = ["bbox", "segm"]').returncode == 0
    assert check(root, save_best="bbox_AP_ellipse", metric_extra="classwise = true").returncode == 0
    r = check(root, save_best="bbox_AP_ellipse")
    assert r.returncode == 2 and "did you mean" in r.stderr


def test_too_few_classes_is_an_error_too_many_a_warning(root):
    r = check(root, num_classes=2)
    assert r.returncode == 2 and "key 'model.num_classes'" in r.stderr
    assert "data.train has 3 classes (rectangle, ellipse, triangle)" in r.stderr
    r = check(root, num_classes=5)
    assert r.returncode == 0, r.stderr
    assert "warning: model.num_classes = 5 but data.train and data.val have 3 classes" in r.stderr
    assert "1 warning(s)" in r.stdout and r.stderr.count("warning:") == 1
    # choosing 2 of the classes makes 2 right
    r = check(root, num_classes=2, train_extra='classes = ["ellipse", "triangle"]')
    assert r.returncode == 2 and "key 'model.num_classes'" in r.stderr and "data.val has 3 classes" in r.stderr


def test_mask_rcnn_without_masks_names_with_masks(root):
    r = check(root, detector="mask_rcnn")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "key 'data.train.with_masks'" in r.stderr and "set data.train.with_masks = true" in r.stderr
    r = check(root, detector="mask_rcnn", train_extra="with_masks = true")
    assert r.returncode == 0, r.stderr


def test_validation_leaves_out_labels_the_data_does_not_have():
    import torch

    from detcore.engine.evaluation import known_classes

    class Data:
        class_names = ["a", "b", "c"]

    preds = [
        {"image_id": 1, "boxes": torch.rand(3, 4), "scores": torch.tensor([0.9, 0.8, 0.7]),
         "labels": torch.tensor([0, 4, 2])},
        {"image_id": 2, "boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    out = known_classes(preds, Data())
    assert out[0]["labels"].tolist() == [0, 2] and out[0]["scores"].tolist() == pytest.approx([0.9, 0.7])
    assert torch.equal(out[0]["boxes"], preds[0]["boxes"][[0, 2]]) and out[0]["image_id"] == 1
    assert out[1] is preds[1]
    # and the coco metric, which refuses unknown labels, scores what is left
    from detcore_coco.metric import to_coco_results

    with pytest.raises(Exception, match="num_classes does not match"):
        to_coco_results(preds, [1, 2, 3], "bbox")
    assert len(to_coco_results(out, [1, 2, 3], "bbox")) == 2
