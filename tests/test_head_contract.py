"""The head contract of docs/models.md ("Head slots"), checked with the FCOS
head that docs/plugins.md writes from it: a plain ``nn.Module`` whose losses
equal torchvision's ``FCOSHead`` on the same inputs, and which trains in the
built-in ``fcos`` detector."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from detcore.testing import DetcoreTester, tiny_run

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


@pytest.fixture
def dots(tmp_path, monkeypatch):
    """The detcore-dots package exactly as docs/plugins.md writes it."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_plugin_system import doc_blocks
    finally:
        sys.path.pop(0)
    for kind, arg, body in doc_blocks(DOCS.read_text()):
        if kind == "file" and arg.startswith("detcore-dots/detcore_dots/"):
            path = tmp_path / arg
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path / "detcore-dots"))
    for name in [m for m in sys.modules if m == "detcore_dots" or m.startswith("detcore_dots.")]:
        monkeypatch.delitem(sys.modules, name)
    yield importlib.import_module("detcore_dots.plugin")
    for name in [m for m in sys.modules if m == "detcore_dots" or m.startswith("detcore_dots.")]:
        del sys.modules[name]


def _batch(torch):
    """Anchor points of a 64-pixel image at strides 8 and 16 (level order,
    then row by row), two images' targets, and FCOS-style matches: a point
    inside a box is matched to it (the smaller box first), others are -1."""
    anchors = []
    for stride in (8, 16):
        ys, xs = torch.meshgrid(torch.arange(64 // stride), torch.arange(64 // stride), indexing="ij")
        c = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float() * stride
        anchors.append(torch.cat([c - stride / 2, c + stride / 2], 1))
    anchors = torch.cat(anchors)
    targets = [
        {"boxes": torch.tensor([[3.0, 5.0, 29.0, 41.0], [18.0, 12.0, 62.0, 50.0]]), "labels": torch.tensor([2, 0])},
        {"boxes": torch.tensor([[10.0, 10.0, 52.0, 30.0]]), "labels": torch.tensor([1])},
    ]
    matched = []
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    for t in targets:
        b = t["boxes"]
        inside = (centers[:, None, 0] > b[:, 0]) & (centers[:, None, 0] < b[:, 2])
        inside &= (centers[:, None, 1] > b[:, 1]) & (centers[:, None, 1] < b[:, 3])
        m = torch.full((len(anchors),), -1, dtype=torch.int64)
        for j in reversed(range(len(b))):
            m[inside[:, j]] = j
        matched.append(m)
    return targets, [anchors, anchors.clone()], matched


def test_the_documented_head_computes_torchvision_fcos_losses(dots):
    import torch
    from torchvision.models.detection.fcos import FCOSHead

    head = dots.dots_fcos_head(in_channels=32, num_anchors=1, num_classes=3)
    assert not any(c.__module__.startswith("torchvision") for c in type(head).__mro__)
    targets, anchors, matched = _batch(torch)
    assert all((m >= 0).any() and (m < 0).any() for m in matched)
    features = [torch.randn(2, 32, 8, 8), torch.randn(2, 32, 4, 4)]
    outputs = head(features)
    hw = 8 * 8 + 4 * 4
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "cls_logits": (2, hw, 3), "bbox_regression": (2, hw, 4), "bbox_ctrness": (2, hw, 1)
    }
    # Same inputs through torchvision's FCOSHead.compute_loss: same losses.
    torch.manual_seed(0)
    same = {
        "cls_logits": torch.randn(2, hw, 3),
        "bbox_regression": torch.rand(2, hw, 4) * 3 + 0.05,
        "bbox_ctrness": torch.randn(2, hw, 1),
    }
    ours = head.compute_loss(targets, same, anchors, matched)
    reference = FCOSHead(32, 1, 3).compute_loss(targets, same, anchors, matched)
    assert ours.keys() == reference.keys() == {"classification", "bbox_regression", "bbox_ctrness"}
    for name in ours:
        assert torch.allclose(ours[name], reference[name], rtol=1e-5, atol=1e-6), name
        assert ours[name] > 0


def test_the_documented_head_trains_in_fcos(dots, tmp_path):
    import torch

    tester = DetcoreTester(tmp_path / "detcore")
    tester.register(dots, "dots")
    run = tiny_run(model={"neck": {"type": "fpn", "out_channels": 32}, "head": {"type": "dots_fcos_head"}})
    result = tester.train(run, iters=4)
    head = result.assert_built("head", "dots:dots_fcos_head")
    assert result.runner.model.head is head
    losses = [row for row in result.scalars() if "bbox_ctrness" in row]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in losses)
    model = result.runner.model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 64, 64)])
    assert set(out) == {"boxes", "scores", "labels"} and out["boxes"].shape[-1] == 4


# --------------------------------------------------------------------------
# RetinaNet and the R-CNN slots, written here from docs/models.md alone
# --------------------------------------------------------------------------


def _delta_encode(torch, boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """The delta coder as docs/models.md defines it."""
    wx, wy, ww, wh = weights
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    acx, acy = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    gw, gh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    gcx, gcy = boxes[:, 0] + gw / 2, boxes[:, 1] + gh / 2
    return torch.stack(
        [wx * (gcx - acx) / aw, wy * (gcy - acy) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], dim=1
    )


def _retinanet_losses(torch, targets, outputs, anchors, matched):
    """RetinaNet's two losses as docs/models.md describes them."""
    from torchvision.ops import sigmoid_focal_loss

    cls_terms, box_terms = [], []
    for i, target in enumerate(targets):
        m = matched[i]
        fg = m >= 0
        num_fg = max(1, int(fg.sum()))
        onehot = torch.zeros_like(outputs["cls_logits"][i])
        onehot[fg, target["labels"][m[fg]]] = 1.0
        valid = m != -2
        cls_terms.append(sigmoid_focal_loss(outputs["cls_logits"][i][valid], onehot[valid], reduction="sum") / num_fg)
        encoded = _delta_encode(torch, target["boxes"][m[fg]], anchors[i][fg])
        box_terms.append((outputs["bbox_regression"][i][fg] - encoded).abs().sum() / num_fg)
    return {"classification": sum(cls_terms) / len(targets), "bbox_regression": sum(box_terms) / len(targets)}


def test_the_documented_retinanet_losses_equal_torchvision():
    import torch
    from torchvision.models.detection.retinanet import RetinaNetHead

    torch.manual_seed(1)
    targets, anchors, _ = _batch(torch)
    hwa = len(anchors[0])
    # IoU-style matches: boxes, background (-1) and ignored (-2) anchors.
    matched = [torch.randint(-2, len(t["boxes"]), (hwa,)) for t in targets]
    outputs = {"cls_logits": torch.randn(2, hwa, 3), "bbox_regression": torch.randn(2, hwa, 4) * 0.3}
    ours = _retinanet_losses(torch, targets, outputs, anchors, matched)
    reference = RetinaNetHead(32, 1, 3).compute_loss(targets, outputs, anchors, matched)
    assert ours.keys() == reference.keys()
    for name in ours:
        assert torch.allclose(ours[name], reference[name], rtol=1e-5), name


def test_plain_rcnn_box_head_and_predictor_train_in_faster_rcnn(tmp_path):
    """A box head and predictor as plain modules, built from the slot table
    (arguments passed, shapes in and out, ``out_channels``, background at
    index 0), train in the built-in faster_rcnn and detect."""
    import types

    import torch
    from torch import nn

    import detcore

    class BoxHead(nn.Module):
        def __init__(self, in_channels, resolution, dim=64):
            super().__init__()
            self.fc = nn.Linear(in_channels * resolution * resolution, dim)
            self.out_channels = dim

        def forward(self, x):  # [R, C, res, res] -> [R, D]
            return torch.relu(self.fc(x.flatten(1)))

    class Predictor(nn.Module):
        def __init__(self, in_channels, num_classes):
            super().__init__()
            self.num_classes = num_classes
            self.cls = nn.Linear(in_channels, num_classes)
            self.box = nn.Linear(in_channels, num_classes * 4)

        def forward(self, x):  # [R, D] -> ([R, K+1], [R, 4 (K+1)])
            return self.cls(x), self.box(x)

    plugin = types.ModuleType("plain_rcnn_heads")
    plugin.detcore_heads = detcore.hookimpl(
        lambda: {
            "plain_box_head": lambda in_channels, resolution: BoxHead(in_channels, resolution),
            "plain_predictor": lambda in_channels, num_classes: Predictor(in_channels, num_classes),
        }
    )
    tester = DetcoreTester(tmp_path / "detcore")
    tester.register(plugin, "plain")
    run = tiny_run(
        model={
            "type": "faster_rcnn",
            "num_classes": 3,
            "backbone": {"type": "tiny"},
            "neck": {"type": "fpn", "out_channels": 32},
            "box_head": {"type": "plain_box_head"},
            "box_predictor": {"type": "plain_predictor"},
            "min_size": 64,
            "max_size": 64,
        }
    )
    result = tester.train(run, iters=3)
    predictor = result.assert_built("head", "plain:plain_predictor")
    assert predictor.num_classes == 4  # num_classes + 1: background at 0
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(result.scalars()[-1])
    model = result.runner.model.eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        (out,) = model([torch.rand(3, 64, 64)])
    assert len(out["labels"]) and int(out["labels"].max()) <= 2  # 0-based, background removed
