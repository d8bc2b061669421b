"""End to end: fine-tune D-FINE from a stand-in "COCO" weights directory on
a small COCO dataset with detcore's runner, then ``detcore test``."""

from __future__ import annotations

import json
import re

import pytest
import torch
from detcore_transformers import plugin

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.slow
def test_fine_tune_from_a_weights_directory_then_detcore_test(detcore_tester, tiny, tmp_path):
    from detcore_coco import plugin as coco_plugin
    from detcore_coco.shapes import make_shapes

    detcore_tester.register(plugin, "transformers")
    detcore_tester.register(coco_plugin, "coco")
    torch.manual_seed(0)
    plugin.dfine(num_classes=80, config=tiny["dfine"]).hf.save_pretrained(tmp_path / "coco80")
    make_shapes(str(tmp_path / "shapes"), train=8, val=4, size=64, seed=0)
    split = {"type": "coco", "ann_file": str(tmp_path / "shapes/val.json"), "img_dir": str(tmp_path / "shapes/val")}
    run = detcore_tester.write_runfile({
        "seed": 0,
        "device": "cpu",
        "work_dir": str(tmp_path / "work"),
        "model": {"type": "dfine", "num_classes": 3, "weights": str(tmp_path / "coco80"), "input_size": [64, 64]},
        "data": {
            "batch_size": 4, "workers": 0,
            "train": {"type": "coco", "ann_file": str(tmp_path / "shapes/train.json"),
                      "img_dir": str(tmp_path / "shapes/train")},
            "val": split, "test": split,
        },
        "optimizer": {"type": "adamw", "lr": 5e-4, "weight_decay": 1e-4, "backbone_lr_mult": 0.5},
        "lr_schedule": {"type": "constant", "warmup": "none"},
        "train": {"max_iters": 16, "log_interval": 1, "val_interval": 16},
        "checkpoint": {"interval": 16, "keep": 1},
        "metrics": [{"type": "coco"}],
    })
    result = detcore_tester.train(run)
    model = result.assert_built("detector", "transformers:dfine")
    assert model.weights_report.skipped_shape  # the 80-class heads became 3-class ones
    log = (tmp_path / "work").glob("*.log")
    assert any("re-initialised for the new classes" in p.read_text() for p in log)
    losses = [s["loss"] for s in result.scalars() if "loss" in s]
    assert len(losses) == 16 and all(k in result.scalars()[0] for k in ("loss_vfl", "loss_giou"))
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4, losses
    assert any("bbox_mAP" in s for s in result.scalars())

    ckpt = torch.load(tmp_path / "work/iter_16.pth", map_location="cpu", weights_only=True)
    assert ckpt["meta"]["class_names"] == ["rectangle", "ellipse", "triangle"]
    tested = detcore_tester.main("test", str(run), "--checkpoint", str(tmp_path / "work/iter_16.pth"))
    assert tested.ret == 0, tested.err
    m = re.search(r"bbox_mAP=([0-9.]+)", tested.out)
    assert m and 0.0 <= float(m.group(1)) <= 1.0, tested.out

    predicted = detcore_tester.main("predict", str(run), "--checkpoint", str(tmp_path / "work/iter_16.pth"),
                                    str(tmp_path / "shapes/val"), "--out-dir", str(tmp_path / "pred"),
                                    "--score-thr", "0")
    assert predicted.ret == 0, predicted.err
    record = json.loads((tmp_path / "pred/predictions.json").read_text())
    assert "rectangle" in json.dumps(record)  # class names from the checkpoint

    timed = detcore_tester.main("benchmark", str(run), "--checkpoint", str(tmp_path / "work/iter_16.pth"),
                                "--warmup", "1", "--iters", "2", "--train-iters", "2", "--threads", "1", "--json")
    assert timed.ret == 0, timed.err
