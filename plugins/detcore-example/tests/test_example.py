"""detcore-example's tests, written the way a plugin author would: with
detcore.testing, the plugin registered in-process, real training runs."""

from __future__ import annotations

import json

import pytest
import torch
from detcore_example import plugin
from detcore_example.cli import make_demo

from detcore.errors import PluginError, RunFileError
from detcore.testing import tiny_run

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

EVERYTHING = {
    "model": {
        "num_classes": 2,
        "backbone": {"type": "example_convnet", "widths": [16, 32, 64]},
        "neck": {"type": "fpn", "out_channels": 32},
        "head": {"type": "shared_tower_fcos_head", "num_convs": 2},
    },
    "data": {
        "train": {
            "type": "csv_boxes",
            "csv_file": "demo/boxes.csv",
            "img_dir": "demo/images",
            "transforms": [{"type": "gaussian_noise", "std": 6.0, "p": 1.0}],
        },
        "val": {"type": "csv_boxes", "csv_file": "demo/boxes.csv", "img_dir": "demo/images"},
    },
    "metrics": [{"type": "box_recall"}],
    "hooks": [{"type": "loss_history", "every": 1}],
    "train": {"max_iters": 2, "val_interval": 2},
    "checkpoint": {"interval": 1, "keep": 2},
}


@pytest.fixture()
def tester(detcore_tester):
    detcore_tester.register(plugin, "example")
    make_demo(detcore_tester.path / "demo", images=4, size=64, seed=0)
    return detcore_tester


def test_every_component_is_used_in_training(tester, monkeypatch):
    monkeypatch.chdir(tester.path)  # the run file's data paths are relative
    result = tester.train(tiny_run(EVERYTHING))
    for kind, name in [
        ("backbone", "example_convnet"),
        ("head", "shared_tower_fcos_head"),
        ("dataset", "csv_boxes"),
        ("transform", "gaussian_noise"),
        ("metric", "box_recall"),
        ("runner_hook", "loss_history"),
    ]:
        result.assert_built(kind, f"example:{name}")
    head = result.assert_built("head", "shared_tower_fcos_head")
    assert head.calls >= 2  # the fcos detector called the swapped-in head
    assert result.runner.model.head is head
    assert result.assert_built("transform", "gaussian_noise").applied >= 2
    assert result.assert_hook_called("detcore_after_train_iter", plugin="runner-hook:0:loss_history") == 2
    lines = (result.work_dir / "loss_history.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in lines] == [0, 1]
    val = [s for s in result.scalars() if "recall" in s]
    assert val and 0.0 <= val[-1]["recall"] <= 1.0


def test_loss_history_is_restored_on_resume(tester, monkeypatch):
    monkeypatch.chdir(tester.path)
    run = tiny_run(EVERYTHING)
    first = tester.train(run, iters=2)
    before = (first.work_dir / "loss_history.jsonl").read_text().splitlines()
    again = tester.train(run, iters=4, resume="auto")
    hook = again.assert_built("runner_hook", "loss_history")
    assert hook.resumed_from == 2
    after = (again.work_dir / "loss_history.jsonl").read_text().splitlines()
    assert after[:2] == before and [json.loads(line)["iter"] for line in after] == [0, 1, 2, 3]


def test_head_shares_one_tower():
    from torchvision.models.detection.fcos import FCOSHead

    head = plugin.shared_tower_fcos_head(in_channels=32, num_anchors=1, num_classes=2, num_convs=2)
    assert head.classification_head.conv is head.regression_head.conv
    plain = FCOSHead(32, 1, 2, num_convs=2)
    saved = sum(p.numel() for p in plain.parameters()) - sum(p.numel() for p in head.parameters())
    assert saved == head.tower_parameters()
    feats = [torch.randn(1, 32, 8, 8), torch.randn(1, 32, 4, 4)]
    out = head(feats)
    assert out["cls_logits"].shape == (1, 80, 2) and out["bbox_regression"].shape == (1, 80, 4)


def test_backbone_follows_the_backbone_contract():
    net = plugin.example_convnet(widths=[8, 16])
    feats = net(torch.randn(2, 3, 64, 64))
    assert list(feats) == ["0", "1"] and net.out_channels == [8, 16]
    assert [tuple(f.shape) for f in feats.values()] == [(2, 8, 16, 16), (2, 16, 8, 8)]


def test_run_file_errors_name_the_key(tester, monkeypatch):
    monkeypatch.chdir(tester.path)
    (tester.path / "bad.csv").write_text("image,x1,y1,x2,y2,label\nimg000.png,5,5,2,9,disc\n")
    cases = [
        ({"csv_file": "bad.csv"}, "data.train.csv_file", "bad.csv:2: expected x2 > x1"),
        ({"csv_file": "missing.csv"}, "data.train.csv_file", "not found"),
        ({"classes": ["disc"]}, "data.train.classes", "not in classes ['disc']"),
        ({"transforms": [{"type": "gaussian_noise", "p": 2.0}]}, "data.train.transforms[0].p", "p must be in"),
        ({"transforms": [{"type": "gausian_noise"}]}, "data.train.transforms[0].type", "did you mean 'gaussian_noise'"),
    ]
    for change, key, needle in cases:
        err = tester.check_error(tiny_run(EVERYTHING, data={"train": change}))
        assert err.key == key and needle in str(err), (key, str(err))
    err = tester.check_error(tiny_run(EVERYTHING, model={"backbone": {"widths": []}}))
    assert err.key == "model.backbone.widths"


def test_csv_command(tester):
    result = tester.main("example-csv", "stats", "demo/boxes.csv")
    assert result.ret == 0, result.err
    assert result.out.startswith("demo/boxes.csv: 4 images, ")
    bad = tester.main("example-csv", "stats", "nope.csv")
    assert bad.ret == 2 and "CSV file 'nope.csv' not found" in bad.err


def test_a_misspelled_hook_is_refused(detcore_tester):
    class Typo:
        @staticmethod
        @plugin.hookimpl
        def detcore_backbone():
            return {}

    with pytest.raises(PluginError, match="did you mean 'detcore_backbones'"):
        detcore_tester.register(Typo, "typo")


def test_unknown_component_suggests_the_name(tester):
    err = tester.check_error(tiny_run(model={"backbone": {"type": "example_convnt"}}))
    assert isinstance(err, RunFileError) and "did you mean 'example_convnet'" in str(err)
