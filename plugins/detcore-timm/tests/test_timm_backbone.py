"""The ``timm`` backbone: real timm models with random weights or a local
weights file (nothing downloaded), under each built-in detector, and its
run-file checks."""

from __future__ import annotations

import pytest
import torch
from detcore_timm import plugin

from detcore.testing import tiny_run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_features_and_declared_channels_agree_with_timm():
    import timm

    backbone = plugin.timm_backbone("convnext_atto", out_indices=[1, 2, 3])
    ref = timm.create_model("convnext_atto", features_only=True, out_indices=(1, 2, 3))
    assert backbone.out_channels == ref.feature_info.channels() == [80, 160, 320]
    assert plugin._channels({"name": "convnext_atto", "out_indices": [1, 2, 3]}) == backbone.out_channels
    backbone.body.load_state_dict(ref.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out = backbone.eval()(x)
        expected = ref.eval()(x)
    assert list(out) == ["0", "1", "2"]
    for got, want in zip(out.values(), expected):
        torch.testing.assert_close(got, want)
    # Default: every level at stride >= 4 (ResNet's stride-2 stem left out).
    assert plugin._channels({"name": "resnet18"}) == [64, 128, 256, 512]


def test_local_weights_file_loads_through_timm(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    full = timm.create_model("resnet10t")  # with its classifier, as published files are
    save_file(full.state_dict(), str(tmp_path / "resnet10t.safetensors"))
    torch.save(full.state_dict(), tmp_path / "resnet10t.pth")
    for name in ("resnet10t.safetensors", "resnet10t.pth"):
        backbone = plugin.timm_backbone("resnet10t", weights=str(tmp_path / name))
        torch.testing.assert_close(backbone.body.layer4[0].conv1.weight, full.layer4[0].conv1.weight)
    random = plugin.timm_backbone("resnet10t")
    assert not torch.equal(random.body.layer4[0].conv1.weight, full.layer4[0].conv1.weight)


def test_frozen_stages_and_norm_eval():
    backbone = plugin.timm_backbone("resnet10t", frozen_stages=2, norm_eval=True)
    trainable = {n.split(".")[0] for n, p in backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}  # stem, layer1 (feature 1) and layer2 (feature 2) frozen
    backbone.train()
    assert not backbone.body.layer1.training and backbone.body.layer4.training
    assert not any(m.training for m in backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    loose = plugin.timm_backbone("resnet10t").train()
    assert all(p.requires_grad for p in loose.parameters())
    assert all(m.training for m in loose.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn", "retinanet", "fcos"])
def test_trains_under_every_builtin_detector(detcore_tester, detector, tmp_path):
    detcore_tester.register(plugin, "timm")
    data = {}
    if detector == "mask_rcnn":  # masks: detcore-coco's shapes data (the synthetic set has boxes only)
        from detcore_coco import plugin as coco_plugin
        from detcore_coco.shapes import make_shapes

        detcore_tester.register(coco_plugin, "coco")
        make_shapes(str(tmp_path / "shapes"), train=4, val=0, size=64)
        data = {"train": {"type": "coco", "ann_file": str(tmp_path / "shapes/train.json"),
                          "img_dir": str(tmp_path / "shapes/train"), "with_masks": True}}
    model = {
        "type": detector, "num_classes": 3,
        "backbone": {"type": "timm", "name": "resnet10t", "out_indices": [2, 3, 4]},
        "neck": {"type": "fpn", "out_channels": 32},
    }
    result = detcore_tester.train(tiny_run(model=model, data=data), iters=2)
    backbone = result.assert_built("backbone", "timm:timm")
    assert backbone.out_channels == [128, 256, 512]
    assert all(torch.isfinite(torch.tensor(s["loss"])) for s in result.scalars() if "loss" in s)


def test_config_check_catches_an_fpn_channel_mismatch_before_building(detcore_tester):
    detcore_tester.register(plugin, "timm")
    run = tiny_run(model={
        "backbone": {"type": "timm", "name": "convnext_tiny", "weights": True},
        "neck": {"type": "fpn", "in_channels": [256, 512, 1024, 2048]},
    })
    err = detcore_tester.check_error(run)
    assert err.key == "model.neck.in_channels"
    assert "[96, 192, 384, 768]" in str(err)


@pytest.mark.parametrize(
    ("backbone", "key", "words"),
    [
        ({"name": "convnext_tinyy"}, "name", "did you mean 'convnext_tiny'"),
        ({"name": "resnet18", "out_indices": [3, 5]}, "out_indices", "0..4"),
        ({"name": "resnet18", "weights": "in1kk"}, "weights", "did you mean"),
        ({"name": "resnet18", "weights": "/nowhere/r18.pth"}, "weights", "does not exist"),
        ({"name": "resnet18", "frozen_stages": 7}, "frozen_stages", "-1..4"),
    ],
)
def test_bad_backbone_tables_are_named(detcore_tester, backbone, key, words):
    detcore_tester.register(plugin, "timm")
    err = detcore_tester.check_error(tiny_run(model={"backbone": {"type": "timm", **backbone}}))
    assert err.key == f"model.backbone.{key}", str(err)
    assert words in str(err)


def test_missing_hub_weights_offline_say_what_to_do(tmp_path, monkeypatch):
    from detcore import CheckpointError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError) as exc:
        plugin.timm_backbone("resnet10t", weights=True)
    assert "hf download timm/resnet10t" in str(exc.value)
