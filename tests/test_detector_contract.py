"""The optional parts of the detector contract (``detcore_detectors`` in
hookspecs.py): ``class_layers``, ``weights_report`` and factories that skip
their pretrained weights under ``detcore.skip_pretrained()``."""

from __future__ import annotations

import types

import pytest

import detcore
from detcore.testing import DetcoreTester, tiny_run

BackboneSpec = detcore.Sub["backbone"]


@pytest.fixture
def tester(tmp_path) -> DetcoreTester:
    return DetcoreTester(tmp_path / "detcore")


def _pretrained_backbone_plugin(loads: list) -> types.ModuleType:
    """A plugin whose backbone loads a weights file itself, unless detcore
    says a checkpoint will overwrite every weight anyway."""
    mod = types.ModuleType("pretrained_plugin")

    def file_backbone(weights: str | None = None):
        import torch

        from detcore.models.backbones import tiny as tiny_backbone

        net = tiny_backbone()
        if weights is not None and not detcore.pretrained_skipped():
            net.load_state_dict(torch.load(weights, weights_only=True))
            loads.append(weights)
        return net

    mod.detcore_backbones = detcore.hookimpl(lambda: {"file_backbone": file_backbone})
    return mod


def test_a_plugin_factory_skips_its_pretrained_file_when_resuming(tester, tmp_path):
    import torch

    from detcore.models.backbones import tiny as tiny_backbone

    weights = tmp_path / "backbone.pth"
    torch.save(tiny_backbone().state_dict(), weights)
    loads: list = []
    tester.register(_pretrained_backbone_plugin(loads), "pretrained")
    run = tiny_run(
        model={"backbone": {"type": "file_backbone", "weights": str(weights)}},
        checkpoint={"interval": 1, "keep": 2},
    )
    first = tester.train(run, iters=2)
    assert loads == [str(weights)]
    weights.unlink()  # a resumed run must not need the pretrained file
    resumed = tester.train(run, iters=3, resume=str(first.work_dir / "iter_2.pth"))
    assert loads == [str(weights)] and resumed.runner.iter == 3
    with detcore.skip_pretrained():
        assert detcore.pretrained_skipped()
    assert not detcore.pretrained_skipped()


def _build(tester, **model):
    from detcore.engine.build import build_model

    return build_model(tester.load(tiny_run(model=model)))


def test_class_layers_make_load_from_strict_about_other_layers(tester, tmp_path):
    import torch

    from detcore.engine.checkpoint import load_weights
    from detcore.errors import CheckpointError

    model = _build(tester)
    assert model.class_layers and model.weights_report is None  # built-in detectors have both
    other = _build(tester, neck={"type": "fpn", "out_channels": 32})  # another neck width
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match="Only the class-dependent layers"):
        load_weights(model, path)
    # Without class_layers (a plugin detector that does not name them), the
    # tensors that fit are loaded and the rest reported.
    del model.class_layers
    report = load_weights(model, path)
    assert report.loaded and report.skipped_shape


def test_the_runner_logs_the_weights_report(tester):
    mod = types.ModuleType("report_plugin")

    class Report:
        def summary(self) -> str:
            return "loaded 7 tensors from somewhere.pth"

    def reported_fcos(num_classes: int, backbone: BackboneSpec, min_size: int = 64, max_size: int = 64):
        from detcore.builtin.models import fcos

        model = fcos(num_classes=num_classes, backbone=backbone, min_size=min_size, max_size=max_size)
        model.weights_report = Report()
        return model

    mod.detcore_detectors = detcore.hookimpl(lambda: {"reported_fcos": reported_fcos})
    tester.register(mod, "report")
    run = tiny_run(model={"type": "reported_fcos", "num_classes": 3, "backbone": {"type": "tiny"}})
    result = tester.train(run, iters=1)
    (log,) = result.work_dir.glob("*.log")
    assert "loaded 7 tensors from somewhere.pth" in log.read_text()
