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
