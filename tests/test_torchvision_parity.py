"""Behavioural parity with torchvision's detection builders (issue 18).

For every built-in detector x backbone that torchvision has a builder for,
trained from scratch, from backbone weights and from detector weights,
detcore's model and torchvision's (built by its real builder) must

- have the same module hyperparameters: every attribute torchvision's
  modules keep (BatchNorm eps/momentum, FrozenBatchNorm2d placement, which
  parameters train, anchor generator, box coders, matchers, samplers,
  transform sizes and mean/std, NMS settings, head loss types ...);
- give the same detections in eval mode and the same losses in train mode;
- hold the same parameters *and buffers* (BatchNorm running statistics)
  after several SGD steps on the same batches.

A state dict has no hyperparameters: detcore's mobilenet_v3 once matched
torchvision key for key and shape for shape with the classification
BatchNorm (eps 1e-3, momentum 0.01) where the detection builders use plain
BatchNorm2d, and trained to 0 mAP. These tests catch that.

Weights cannot be downloaded here: the files are made from randomly
initialised torchvision models (with random BatchNorm statistics, so eps
matters) and put where torchvision's loader finds them
($TORCH_HOME/hub/checkpoints); both torchvision's builder and detcore load
them through their real loading code.
"""

from __future__ import annotations

import functools
import os
import types
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torch import nn  # noqa: E402
from torchvision.models import get_model_builder, get_model_weights, get_weight  # noqa: E402

from detcore.runfile.components import validate_component  # noqa: E402

R50 = {"type": "resnet", "depth": 50}
MV3 = {"type": "mobilenet_v3", "arch": "large"}


def _config_settings(name: str) -> dict:
    """The detector settings of a shipped model config (not its backbone
    table: the tests set weights and freezing per case)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib

    path = Path(__file__).resolve().parents[1] / "configs" / "models" / name
    model = tomllib.loads(path.read_text())["model"]
    return {k: v for k, v in model.items() if k not in ("backbone", "num_classes")}


# torchvision builder -> (detcore model table, backbone weights enum)
CASES = {
    "fasterrcnn_resnet50_fpn": ({"type": "faster_rcnn", "backbone": R50}, "ResNet50_Weights"),
    "fasterrcnn_resnet50_fpn_v2": ({"type": "faster_rcnn", "variant": "v2", "backbone": R50}, "ResNet50_Weights"),
    "fasterrcnn_mobilenet_v3_large_fpn": ({"type": "faster_rcnn", "backbone": MV3}, "MobileNet_V3_Large_Weights"),
    # torchvision's 320 model is the same network at a low resolution with
    # fewer test proposals: the settings of the shipped config
    "fasterrcnn_mobilenet_v3_large_320_fpn": (
        {**_config_settings("faster_rcnn_mobilenet_v3_320_fpn.toml"), "backbone": MV3},
        "MobileNet_V3_Large_Weights",
    ),
    "maskrcnn_resnet50_fpn": ({"type": "mask_rcnn", "backbone": R50}, "ResNet50_Weights"),
    "maskrcnn_resnet50_fpn_v2": ({"type": "mask_rcnn", "variant": "v2", "backbone": R50}, "ResNet50_Weights"),
    "retinanet_resnet50_fpn": ({"type": "retinanet", "backbone": R50}, "ResNet50_Weights"),
    "retinanet_resnet50_fpn_v2": ({"type": "retinanet", "variant": "v2", "backbone": R50}, "ResNet50_Weights"),
    "fcos_resnet50_fpn": ({"type": "fcos", "backbone": R50}, "ResNet50_Weights"),
}
MODES = ("scratch", "backbone_weights", "detector_weights")
# Every combination runs (CI runs slow tests too); without -m slow: every
# MobileNet one, every detector from scratch, and the eps-0 COCO_V1 case.
FAST = {(b, m) for b in CASES for m in MODES if "mobilenet" in b or m == "scratch"}
FAST.add(("fasterrcnn_resnet50_fpn", "detector_weights"))


def _rcnn(builder: str) -> bool:
    return "rcnn" in builder


def _full_weights_name(builder: str) -> str:
    return f"{get_model_weights(builder).__name__}.COCO_V1"


# ----------------------------------------------------------------------
# weights files where torchvision's loader looks for them
# ----------------------------------------------------------------------


def _random_statistics(state: dict, seed: int) -> dict:
    """BatchNorm statistics away from (0, 1) (not far: frozen random
    statistics through 50 layers blow activations up), so a layer that
    ignores them shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        if k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            v = torch.randn(v.shape, generator=g) * 0.05
        out[k] = v
    return out


def _put(hub, full_name: str, make_state) -> None:
    path = hub / os.path.basename(get_weight(full_name).url)
    if not path.exists():
        torch.save(make_state(), path)


def _backbone_state(enum: str):
    arch = {"ResNet50_Weights": "resnet50", "MobileNet_V3_Large_Weights": "mobilenet_v3_large"}[enum]

    def make():
        torch.manual_seed(11)
        return _random_statistics(getattr(torchvision.models, arch)(weights=None).state_dict(), 12)

    return make


def _detector_state(builder: str):
    def make():
        torch.manual_seed(21)
        model = get_model_builder(builder)(weights=None, weights_backbone=None)
        return _random_statistics(model.state_dict(), 22)

    return make


# ----------------------------------------------------------------------
# building both
# ----------------------------------------------------------------------


def build_pair(catalog, hub, builder: str, mode: str, **runtime):
    """(detcore's model, torchvision's model) for ``builder`` in ``mode``,
    with ``runtime`` (sizes, proposal counts) given to both. From scratch
    and with backbone weights, the layers that start random are copied from
    torchvision's model into detcore's (after checking that what was loaded
    agrees): the same weights in both."""
    table, backbone_enum = CASES[builder]
    table = {**table, **_detcore_args(builder, runtime)}
    tv_kwargs = dict(runtime)
    if mode == "backbone_weights":
        _put(hub, f"{backbone_enum}.IMAGENET1K_V1", _backbone_state(backbone_enum))
        tv_kwargs["weights_backbone"] = get_weight(f"{backbone_enum}.IMAGENET1K_V1")
        table["backbone"] = {**table["backbone"], "weights": "IMAGENET1K_V1"}
        num_classes = 5
    elif mode == "detector_weights":
        _put(hub, _full_weights_name(builder), _detector_state(builder))
        tv_kwargs["weights"] = get_weight(_full_weights_name(builder))
        table["weights"] = _full_weights_name(builder)
        num_classes = 91  # torchvision's COCO class count
    else:
        num_classes = 5
    if mode != "detector_weights":
        tv_kwargs["num_classes"] = num_classes
    # detcore never counts the background; torchvision's R-CNNs do
    table["num_classes"] = num_classes - 1 if _rcnn(builder) else num_classes
    if mode != "detector_weights":
        tv_kwargs.setdefault("weights", None)
    tv_kwargs.setdefault("weights_backbone", None)

    torch.manual_seed(0)
    theirs = get_model_builder(builder)(**tv_kwargs)
    validate_component(catalog, "detector", table, "model")
    ours = catalog.build("detector", table, path="model")

    if mode == "detector_weights":
        _assert_states_equal(ours, theirs, "after loading the detector weights")
    else:
        if mode == "backbone_weights":
            _assert_states_equal(ours.backbone.body, theirs.backbone.body, "after loading the backbone weights")
        ours.load_state_dict(theirs.state_dict(), strict=False)
        _assert_states_equal(ours, theirs, "after copying")
    return ours, theirs


def _detcore_args(builder: str, runtime: dict) -> dict:
    """torchvision's keyword arguments as detcore's run-file keys."""
    rename = {"box_batch_size_per_image": "box_batch_size_per_image",
              "box_detections_per_img": "detections_per_img", "box_score_thresh": "score_thresh"}
    return {rename.get(k, k): v for k, v in runtime.items()}


def _assert_states_equal(ours: nn.Module, theirs: nn.Module, when: str) -> None:
    a = {k: v for k, v in ours.state_dict().items() if not k.endswith("num_batches_tracked")}
    b = {k: v for k, v in theirs.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert a.keys() == b.keys(), f"state-dict keys differ {when}"
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=lambda m, k=k: f"{k} {when}: {m}")


# ----------------------------------------------------------------------
# module hyperparameters
# ----------------------------------------------------------------------

_MODULE_INTERNALS = set(vars(nn.Module())) | {"training"}
_PRIMITIVE = (bool, int, float, str, type(None))
# detcore's classes that stand where torchvision's do (same module names
# and state-dict keys): BackboneWithNeck holds any neck under the name
# torchvision's BackboneWithFPN gives its FPN.
_STANDS_IN_FOR = {("BackboneWithNeck", "BackboneWithFPN")}


def _value(v, depth: int = 0):
    if isinstance(v, _PRIMITIVE):
        return v
    if isinstance(v, torch.Tensor):
        return ("tensor", tuple(v.shape), v.detach().flatten()[:64].tolist())
    if isinstance(v, (tuple, list)):
        return tuple(_value(x, depth + 1) for x in v)
    if isinstance(v, dict):
        return {k: _value(x, depth + 1) for k, x in v.items()}
    if isinstance(v, nn.Module):
        return ("module", type(v).__name__)  # its own entries come from named_modules
    if isinstance(v, functools.partial):
        return ("partial", _value(v.func), _value(v.args), _value(v.keywords))
    if isinstance(v, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return ("callable", getattr(v, "__qualname__", repr(v)))
    if hasattr(v, "__dict__") and depth < 3:
        return (type(v).__name__, {k: _value(x, depth + 1) for k, x in vars(v).items()})
    return ("object", type(v).__name__)


def describe(model: nn.Module) -> dict[str, object]:
    """Every hyperparameter torchvision's modules keep, by module path:
    module classes, non-tensor attributes (also of the helper objects a
    module holds: box coders, matchers, samplers), and which parameters
    train."""
    out: dict[str, object] = {}
    for name, m in model.named_modules():
        out[f"{name}:class"] = type(m)
        for k, v in vars(m).items():
            if k not in _MODULE_INTERNALS:
                out[f"{name}.{k}"] = _value(v)
        for pname, p in m.named_parameters(recurse=False):
            out[f"{name}.{pname}:requires_grad"] = p.requires_grad
    return out


def hyperparameter_differences(ours: nn.Module, theirs: nn.Module) -> list[str]:
    """Entries of torchvision's model that detcore's lacks or sets
    differently (detcore's own extra attributes are not compared)."""
    a, b = describe(ours), describe(theirs)
    diffs = []
    for key, want in b.items():
        if key not in a:
            diffs.append(f"{key}: missing (torchvision: {want!r})")
            continue
        got = a[key]
        if key.endswith(":class"):
            same = got is want or (
                issubclass(got, want) and not issubclass(want, nn.modules.batchnorm._NormBase)
            ) or (got.__name__, want.__name__) in _STANDS_IN_FOR
            if not same:
                diffs.append(f"{key}: {got.__name__} (torchvision: {want.__name__})")
        elif key.endswith(".featmap_names") and set(got) <= set(want):
            # torchvision's default RoIAlign lists '0'..'3' and pools the
            # ones the backbone has; detcore lists those it has: the same maps
            continue
        elif got != want:
            diffs.append(f"{key}: {got!r} (torchvision: {want!r})")
    if getattr(ours.transform, "keep_size", False) and not getattr(theirs.transform, "keep_size", False):
        diffs.append(f"transform.min_size: none, the input size is kept (torchvision: {theirs.transform.min_size})")
    return diffs


def _norm_summary(model: nn.Module) -> set:
    return {
        (type(m).__name__, m.eps, getattr(m, "momentum", None))
        for m in model.modules()
        if isinstance(m, (nn.modules.batchnorm._NormBase, torchvision.ops.misc.FrozenBatchNorm2d))
    }


# torchvision's default input size; detcore's detectors do not resize by
# default (the data pipeline decides the size), so the comparison sets it.
TV_SIZES = {"min_size": 800, "max_size": 1333}


def test_hyperparameter_comparison_sees_the_old_mobilenet_batchnorm(catalog, module_torch_hub):
    """The comparison is not blind: MobileNetV3's classification BatchNorm
    (what detcore used to build) is reported layer by layer."""
    from functools import partial

    ours, theirs = build_pair(catalog, module_torch_hub, "fasterrcnn_mobilenet_v3_large_fpn", "scratch", **TV_SIZES)
    old = torchvision.models.mobilenet_v3_large(norm_layer=partial(nn.BatchNorm2d, eps=0.001, momentum=0.01))
    body = ours.backbone.body
    for name, m in old.features.named_modules():
        if isinstance(m, nn.BatchNorm2d) and name.split(".")[0] in body._modules:
            body.get_submodule(name).eps, body.get_submodule(name).momentum = m.eps, m.momentum
    diffs = hyperparameter_differences(ours, theirs)
    assert any(d.startswith("backbone.body.0.1.momentum: 0.01 (torchvision: 0.1)") for d in diffs), diffs[:5]
    assert any(".eps: 0.001 (torchvision: 1e-05)" in d for d in diffs)


# What a model built from the default table does differently from
# torchvision's builder, on purpose (docs/models.md, "Parity with torchvision"):
ON_PURPOSE = {
    # detcore's detectors do not resize unless min_size is set: the data
    # pipeline decides the input size
    "transform.min_size": "all",
    # one score threshold for every detector, 0.05, as COCO evaluation
    # (and MMDetection's FCOS) uses; torchvision's FCOS class has 0.2
    ".score_thresh": "fcos",
}


def _on_purpose(builder: str) -> set[str]:
    return {k for k, where in ON_PURPOSE.items() if where in ("all", builder.split("_")[0])}


@pytest.mark.parametrize("builder", [b for b in CASES if "320" not in b])
def test_defaults_that_differ_from_torchvision_on_purpose(catalog, builder):
    theirs = get_model_builder(builder)(weights=None, weights_backbone=None, num_classes=4)
    table = {**CASES[builder][0], "num_classes": 3 if _rcnn(builder) else 4}
    validate_component(catalog, "detector", table, "model")
    ours = catalog.build("detector", table, path="model")
    diffs = {d.split(":")[0] for d in hyperparameter_differences(ours, theirs)}
    assert diffs == _on_purpose(builder), diffs


# ----------------------------------------------------------------------
# behaviour: eval outputs, train losses, SGD steps
# ----------------------------------------------------------------------

# Small inputs and few RoIs keep R50 models quick on one CPU thread; both
# models get the same values, so they compare the same code paths.
def _runtime(builder: str) -> dict:
    sizes = {"min_size": 96, "max_size": 128}
    if _rcnn(builder):
        return {**sizes, "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 40,
                "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 40,
                "box_batch_size_per_image": 32, "box_detections_per_img": 30, "box_score_thresh": 0.0}
    return {**sizes, "topk_candidates": 100, "detections_per_img": 30, "score_thresh": 0.0}


def _batches(n: int, masks: bool, num_classes: int):
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n):
        images, targets = [], []
        for h, w in ((96, 128), (112, 96)):
            images.append(torch.rand(3, h, w, generator=g))
            k = 3
            xy = torch.rand(k, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
            wh = 12 + torch.rand(k, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])
            boxes = torch.cat([xy, xy + wh], 1)
            labels = torch.randint(1, num_classes, (k,), generator=g)
            t = {"boxes": boxes, "labels": labels}
            if masks:
                m = torch.zeros(k, h, w, dtype=torch.uint8)
                for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                    m[i, y0:y1, x0:x1] = 1
                t["masks"] = m
            targets.append(t)
        out.append((images, targets))
    return out


def _ours_targets(builder: str, targets: list[dict]) -> list[dict]:
    # detcore's labels are 0-based without background for every detector;
    # torchvision's R-CNNs keep 0 for the background
    if not _rcnn(builder):
        return targets
    return [{**t, "labels": t["labels"] - 1} for t in targets]


def _sgd(model: nn.Module):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)


def _behaviour_params():
    out = []
    for builder in CASES:
        for mode in MODES:
            marks = [] if (builder, mode) in FAST else [pytest.mark.slow]
            out.append(pytest.param(builder, mode, marks=marks, id=f"{builder}-{mode}"))
    return out


@pytest.mark.parametrize("builder, mode", _behaviour_params())
def test_same_hyperparameters_outputs_losses_and_training_as_torchvision(catalog, module_torch_hub, builder, mode):
    ours, theirs = build_pair(catalog, module_torch_hub, builder, mode, **_runtime(builder))

    # hyperparameters: what a state dict never shows
    diffs = [d for d in hyperparameter_differences(ours, theirs)
             if d.split(":")[0] not in _on_purpose(builder)]
    assert not diffs, f"{len(diffs)} differences, e.g.\n" + "\n".join(diffs[:15])
    assert _norm_summary(ours) == _norm_summary(theirs)
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in theirs.named_parameters() if p.requires_grad}
    num_classes = 91 if mode == "detector_weights" else 5
    batches = _batches(2, "maskrcnn" in builder, num_classes)
    images = batches[0][0]

    # eval mode: the same detections
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        got, want = ours(images), theirs(images)
    assert sum(len(w["boxes"]) for w in want) > 0
    for g, w in zip(got, want):
        torch.testing.assert_close(g["boxes"], w["boxes"])
        torch.testing.assert_close(g["scores"], w["scores"])
        assert torch.equal(g["labels"], w["labels"] - (1 if _rcnn(builder) else 0))
        if "masks" in w:
            torch.testing.assert_close(g["masks"], w["masks"])

    # train mode: the same losses, then the same weights and statistics
    # after SGD steps (the seed is set before each forward: the R-CNN
    # samplers draw random numbers)
    ours.train()
    theirs.train()
    opt_ours, opt_theirs = _sgd(ours), _sgd(theirs)
    for step, (imgs, targets) in enumerate(batches):
        torch.manual_seed(100 + step)
        want_losses = theirs(imgs, targets)
        torch.manual_seed(100 + step)
        got_losses = ours(imgs, _ours_targets(builder, targets))
        assert got_losses.keys() == want_losses.keys()
        for k in want_losses:
            torch.testing.assert_close(got_losses[k], want_losses[k],
                                       msg=lambda m, k=k, step=step: f"step {step} {k}: {m}")
        for opt, losses in ((opt_ours, got_losses), (opt_theirs, want_losses)):
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()

    a, b = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert a.keys() == b.keys()
    for k in b:
        torch.testing.assert_close(a[k], b[k], msg=lambda m, k=k: f"parameter {k} after training: {m}")
    a, b = dict(ours.named_buffers()), dict(theirs.named_buffers())
    assert a.keys() == b.keys()
    for k in b:
        torch.testing.assert_close(a[k], b[k], msg=lambda m, k=k: f"buffer {k} after training: {m}")
    moved = [k for k, v in b.items() if k.endswith("running_mean") and v.abs().sum() > 0]
    if mode == "scratch":
        assert moved, "the BatchNorm statistics were meant to change"
