"""Pretrained weights (issues 3 and 11): backbone state-dict files and
torchvision weights names, torchvision COCO detector weights loaded key for
key from $TORCH_HOME/hub/checkpoints with no network, and the errors."""

from __future__ import annotations

import logging
import os

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from detcore.errors import CheckpointError, RunFileError  # noqa: E402
from detcore.models import names  # noqa: E402
from detcore.runfile.components import validate_component  # noqa: E402


def expected_file(full_name: str) -> str:
    return os.path.basename(torchvision.models.get_weight(full_name).url)


def build(catalog, table: dict, kind: str = "detector", path: str = "model"):
    validate_component(catalog, kind, table, path)
    return catalog.build(kind, table, path=path)


# ----------------------------------------------------------------------
# the light tables agree with torchvision
# ----------------------------------------------------------------------


def test_weight_tables_match_torchvision():
    from torchvision.models import get_model_weights

    for arch, (enum, entries) in names.BACKBONE_WEIGHTS.items():
        tv_enum = get_model_weights(arch)
        assert tv_enum.__name__ == enum
        assert sorted(entries) == sorted(w.name for w in tv_enum)
    for options in names.DETECTOR_WEIGHTS.values():
        for enum, _, _ in options:
            assert torchvision.models.get_weight(f"{enum}.COCO_V1").meta["categories"][0] == "__background__"


# ----------------------------------------------------------------------
# backbone weights
# ----------------------------------------------------------------------


def test_backbone_loads_a_local_state_dict_file(catalog, tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)

    body = build(catalog, {"type": "resnet", "depth": 18, "weights": str(path)}, "backbone", "model.backbone")
    fresh = build(catalog, {"type": "resnet", "depth": 18}, "backbone", "model.backbone")
    for key, value in body.state_dict().items():
        if "num_batches_tracked" not in key:
            torch.testing.assert_close(value, reference.state_dict()[key], rtol=0, atol=0)
    assert not torch.equal(fresh.conv1.weight, body.conv1.weight)


def test_bad_backbone_files_are_clear_errors(catalog, tmp_path):
    wrong = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(CheckpointError, match=r"r34\.pth.*do not fit the resnet18 backbone.*unexpected"):
        build(catalog, {"type": "resnet", "depth": 18, "weights": str(wrong)}, "backbone", "b")

    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(wrong.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"cut\.pth.*truncated"):
        build(catalog, {"type": "resnet", "depth": 18, "weights": str(truncated)}, "backbone", "b")

    with pytest.raises(CheckpointError, match=r"nothere\.pth' does not exist"):
        build(catalog, {"type": "resnet", "depth": 18, "weights": str(tmp_path / "nothere.pth")}, "backbone", "b")


def test_backbone_weights_name_resolves_offline_from_torch_home(catalog, torch_hub):
    torch.manual_seed(2)
    reference = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(reference.state_dict(), torch_hub / expected_file("MobileNet_V3_Small_Weights.IMAGENET1K_V1"))
    body = build(catalog, {"type": "mobilenet_v3", "arch": "small", "weights": "IMAGENET1K_V1"}, "backbone", "b")
    torch.testing.assert_close(body["0"][0].weight, reference.features[0][0].weight, rtol=0, atol=0)
    # pretrained: frozen BatchNorm and torchvision's 3 trainable stages by default
    from torchvision.ops.misc import FrozenBatchNorm2d

    assert isinstance(body["0"][1], FrozenBatchNorm2d)
    assert not body["0"][0].weight.requires_grad and body["12"][0].weight.requires_grad


def test_missing_weights_file_offline_says_which_file_to_put_where(catalog, torch_hub):
    with pytest.raises(CheckpointError) as info:
        build(catalog, {"type": "resnet", "depth": 18, "weights": "IMAGENET1K_V1"}, "backbone", "b")
    msg = str(info.value)
    assert str(torch_hub / "resnet18-f37072fd.pth") in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg


def test_unknown_backbone_weights_name_lists_the_valid_ones(catalog):
    with pytest.raises(RunFileError) as info:
        validate_component(catalog, "backbone", {"type": "resnet", "depth": 50, "weights": "IMAGENET_V1"}, "model.backbone")
    assert info.value.key == "model.backbone.weights"
    assert "IMAGENET1K_V1" in str(info.value) and "IMAGENET1K_V2" in str(info.value)


# ----------------------------------------------------------------------
# detector weights (issue 11)
# ----------------------------------------------------------------------

HEAD_KEYS = {
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.bias",
}


def test_mask_rcnn_coco_v1_loads_everything_but_the_class_layers(catalog, torch_hub, caplog):
    torch.manual_seed(3)
    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    saved = reference.state_dict()
    torch.save(saved, torch_hub / expected_file("MaskRCNN_ResNet50_FPN_Weights.COCO_V1"))
    del reference

    with caplog.at_level(logging.INFO, logger="detcore"):
        model = build(catalog, {
            "type": "mask_rcnn", "num_classes": 2, "weights": "COCO_V1",
            "backbone": {"type": "resnet", "depth": 50},
        })
    report = model.weights_report
    assert {key for key, _, _ in report.skipped_shape} == HEAD_KEYS
    assert report.missing == ()
    own = model.state_dict()
    compared = 0
    for key, value in own.items():
        if key in HEAD_KEYS:
            assert value.shape != saved[key].shape
            continue
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
        compared += 1
    assert compared == len(own) - len(HEAD_KEYS) > 300
    assert "6 skipped for shape" in caplog.text and "mask_fcn_logits.weight" in caplog.text
    # torchvision's fine-tuning defaults under detector weights
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad
    assert model.backbone.body.layer2[0].conv1.weight.requires_grad


def test_faster_rcnn_matches_torchvision_key_for_key(catalog, torch_hub):
    torch.manual_seed(4)
    kwargs = {"min_size": 160, "max_size": 224, "box_score_thresh": 0.0}
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, **kwargs
    ).eval()
    torch.save(reference.state_dict(), torch_hub / expected_file("FasterRCNN_ResNet50_FPN_Weights.COCO_V1"))

    model = build(catalog, {
        "type": "faster_rcnn", "num_classes": 90, "weights": "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
        # torchvision builds BatchNorm (not frozen) without weights: the same here
        "backbone": {"type": "resnet", "depth": 50, "norm": "bn"},
        "min_size": 160, "max_size": 224, "score_thresh": 0.0,
    }).eval()
    assert model.weights_report.skipped_shape == () and model.weights_report.missing == ()

    image = torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model([image])[0], reference([image])[0]
    assert len(theirs["boxes"]) > 10
    torch.testing.assert_close(ours["boxes"], theirs["boxes"])
    torch.testing.assert_close(ours["scores"], theirs["scores"])
    assert torch.equal(ours["labels"], theirs["labels"] - 1)


def test_wrong_detector_weights_are_runfile_errors_listing_valid_names(catalog):
    with pytest.raises(RunFileError) as info:
        validate_component(catalog, "detector", {"type": "retinanet", "num_classes": 3, "weights": "COCO_V2",
                                      "backbone": {"type": "resnet", "depth": 50}}, "model")
    assert info.value.key == "model.weights"
    assert "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1" in str(info.value)

    with pytest.raises(RunFileError, match=r"depth = 50"):
        validate_component(catalog, "detector", {"type": "fcos", "num_classes": 3, "weights": "COCO_V1",
                                      "backbone": {"type": "resnet", "depth": 18}}, "model")
    with pytest.raises(RunFileError, match=r"variant = 'v2'"):
        validate_component(catalog, "detector", {"type": "mask_rcnn", "num_classes": 3,
                                      "weights": "MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
                                      "backbone": {"type": "resnet", "depth": 50}}, "model")


def test_detector_weights_offline_and_foreign_files(catalog, torch_hub, tmp_path):
    table = {"type": "retinanet", "num_classes": 3, "weights": "COCO_V1",
             "backbone": {"type": "resnet", "depth": 50}}
    with pytest.raises(CheckpointError) as info:
        build(catalog, table)
    assert str(torch_hub / expected_file("RetinaNet_ResNet50_FPN_Weights.COCO_V1")) in str(info.value)

    foreign = tmp_path / "fcos_tiny.pth"
    small = build(catalog, {"type": "fcos", "num_classes": 3, "backbone": {"type": "tiny", "width": 16},
                            "neck": {"type": "fpn", "out_channels": 64, "extra": "p6p7"}})
    torch.save(small.state_dict(), foreign)
    with pytest.raises(CheckpointError, match=r"fcos_tiny\.pth.*do not fit this FasterRCNN"):
        build(catalog, {"type": "faster_rcnn", "num_classes": 3, "weights": str(foreign),
                        "backbone": {"type": "tiny", "width": 16}})


def test_skip_pretrained_builds_without_loading(catalog, torch_hub):
    from detcore.models.pretrained import skip_pretrained

    with skip_pretrained():
        model = build(catalog, {"type": "fcos", "num_classes": 3, "weights": "COCO_V1",
                                "backbone": {"type": "resnet", "depth": 50, "weights": "IMAGENET1K_V1"}})
    assert model.weights_report is None


def _legacy_names(state: dict) -> dict:
    """Key names of torchvision checkpoints published before its layers
    moved to Conv2dNormActivation (the real COCO_V1 files use them)."""
    import re

    out = {}
    for k, v in state.items():
        k = re.sub(r"((?:inner|layer)_blocks\.\d+)\.0\.", r"\1.", k)
        k = re.sub(r"((?:classification|regression)_head\.conv)\.(\d+)\.0\.",
                   lambda m: f"{m[1]}.{2 * int(m[2])}.", k)
        out[k] = v
    return out


def test_legacy_torchvision_key_names_load(catalog, torch_hub):
    torch.manual_seed(5)
    saved = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    legacy = _legacy_names(saved)
    assert "backbone.fpn.inner_blocks.0.weight" in legacy and "head.classification_head.conv.6.weight" in legacy
    torch.save(legacy, torch_hub / expected_file("RetinaNet_ResNet50_FPN_Weights.COCO_V1"))
    model = build(catalog, {"type": "retinanet", "num_classes": 91, "weights": "COCO_V1",
                            "backbone": {"type": "resnet", "depth": 50}})
    assert model.weights_report.missing == () and model.weights_report.skipped_shape == ()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)


R50 = {"type": "resnet", "depth": 50}
TORCHVISION_LAYOUTS = [
    ("fasterrcnn_resnet50_fpn", {"type": "faster_rcnn", "backbone": R50}),
    ("fasterrcnn_resnet50_fpn_v2", {"type": "faster_rcnn", "variant": "v2", "backbone": R50}),
    ("fasterrcnn_mobilenet_v3_large_fpn", {"type": "faster_rcnn", "backbone": {"type": "mobilenet_v3"}}),
    ("maskrcnn_resnet50_fpn", {"type": "mask_rcnn", "backbone": R50}),
    ("maskrcnn_resnet50_fpn_v2", {"type": "mask_rcnn", "variant": "v2", "backbone": R50}),
    ("retinanet_resnet50_fpn", {"type": "retinanet", "backbone": R50}),
    ("retinanet_resnet50_fpn_v2", {"type": "retinanet", "variant": "v2", "backbone": R50}),
    ("fcos_resnet50_fpn", {"type": "fcos", "backbone": R50}),
]


@pytest.mark.parametrize("builder, table", TORCHVISION_LAYOUTS, ids=[b for b, _ in TORCHVISION_LAYOUTS])
def test_every_coco_layout_matches_torchvision_key_for_key(catalog, builder, table):
    """Each detector torchvision publishes COCO weights for: the same state-dict
    keys and shapes, and "COCO_V1" resolves to that builder's weights."""
    from torchvision.models import get_model_builder, get_model_weights

    theirs = get_model_builder(builder)(weights=None, weights_backbone=None).state_dict()
    num_classes = 90 if "rcnn" in builder else 91  # torchvision's 91 include the background for R-CNNs
    ours = build(catalog, {**table, "num_classes": num_classes}).state_dict()

    def shapes(state):
        return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}

    assert shapes(ours) == shapes(theirs)
    enum, _ = names.resolve_detector_weights(
        table["type"], "COCO_V1", names.backbone_arch(table["backbone"]), table.get("variant", "v1")
    )
    assert enum == get_model_weights(builder).__name__
