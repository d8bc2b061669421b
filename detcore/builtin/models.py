"""Built-in model components: backbones, necks, heads and detectors.

Registered as the plugin ``detcore.models``, exactly like a third-party
plugin. This module stays light: each factory's signature is the run-file
interface (checked before anything heavy runs) and imports torch only when
called. The models themselves live in :mod:`detcore.models`. docs/models.md
documents every argument.
"""

from __future__ import annotations

import inspect
from typing import Literal

from detcore import hookimpl
from detcore.catalog import Sub, check_with
from detcore.errors import ConfigCheckError
from detcore.models import declare_out_channels, names, out_channels_of

Norm = Literal["bn", "frozen_bn"]

# Aliases, not Sub["..."] inline: linters read a quoted subscript in an
# annotation as a forward reference. Names after the kind are the arguments
# the detector passes to that slot itself.
BackboneSpec = Sub["backbone"]
NeckSpec = Sub["neck", "in_channels"]
RPNHeadSpec = Sub["head", "in_channels", "num_anchors"]
BoxHeadSpec = Sub["head", "in_channels", "resolution"]
PredictorSpec = Sub["head", "in_channels", "num_classes"]
MaskHeadSpec = Sub["head", "in_channels"]
DenseHeadSpec = Sub["head", "in_channels", "num_anchors", "num_classes"]


# ----------------------------------------------------------------------
# argument checks (no torch)
# ----------------------------------------------------------------------


def _check_indices(args: dict, n: int, default) -> list[int]:
    return names.check_out_indices(args.get("out_indices", default), n)


def _check_weights(args: dict, arch: str | None) -> None:
    names.check_backbone_weights(args.get("weights"), arch)


def _check_freezing(args: dict, max_trainable: int, max_frozen: int | None) -> None:
    if args.get("frozen_stages") is not None and args.get("trainable_layers") is not None:
        raise ConfigCheckError("give frozen_stages or trainable_layers, not both", key="trainable_layers")
    t = args.get("trainable_layers")
    if t is not None and not 0 <= t <= max_trainable:
        raise ConfigCheckError(f"must be in 0..{max_trainable}, got {t}", key="trainable_layers")
    f = args.get("frozen_stages")
    if max_frozen is not None and f is not None and not -1 <= f <= max_frozen:
        raise ConfigCheckError(f"must be in -1..{max_frozen} (-1: nothing frozen), got {f}", key="frozen_stages")


def _check_bn(args: dict) -> None:
    eps = args.get("bn_eps")
    if eps is not None and eps < 0:
        raise ConfigCheckError(f"must be >= 0, got {eps}", key="bn_eps")
    momentum = args.get("bn_momentum")
    if momentum is not None and not 0 < momentum <= 1:
        raise ConfigCheckError(f"must be in (0, 1] (PyTorch's BatchNorm momentum: the weight of the "
                               f"new batch in the running statistics), got {momentum}", key="bn_momentum")


def _check_resnet(args: dict, ctx) -> None:
    _check_bn(args)
    _check_indices(args, 4, (0, 1, 2, 3))
    _check_freezing(args, 5, 4)
    _check_weights(args, names.backbone_arch({"type": "resnet", **args}))


def _check_mobilenet(arch_of):
    def check(args: dict, ctx) -> None:
        _check_bn(args)
        _check_indices(args, 6, (4, 5))
        _check_freezing(args, 6, None)
        _check_weights(args, arch_of(args))

    return check


def _check_tiny(args: dict, ctx) -> None:
    _check_indices(args, 4, (1, 2, 3))
    if args.get("width", 32) < 8:
        raise ConfigCheckError(f"must be >= 8, got {args['width']}", key="width")
    if args.get("blocks", 1) < 1:
        raise ConfigCheckError(f"must be >= 1, got {args['blocks']}", key="blocks")
    if not -1 <= args.get("frozen_stages", -1) <= 4:
        raise ConfigCheckError("must be in -1..4 (-1: nothing frozen)", key="frozen_stages")
    _check_weights(args, None)


def _resnet_channels(args: dict) -> list[int]:
    chans = names.RESNET_CHANNELS[args.get("depth", 50)]
    return [chans[i] for i in args.get("out_indices", (0, 1, 2, 3))]


def _mobilenet_channels(arch_of):
    def channels(args: dict) -> list[int]:
        chans = names.MOBILENET_STAGE_CHANNELS[arch_of(args)]
        return [chans[i] for i in args.get("out_indices", (4, 5))]

    return channels


def _tiny_channels(args: dict) -> list[int]:
    chans = names.tiny_channels(args.get("width", 32))
    return [chans[i] for i in args.get("out_indices", (1, 2, 3))]


def _v3_arch(args: dict) -> str:
    return f"mobilenet_v3_{args.get('arch', 'large')}"


def _v2_arch(args: dict) -> str:
    return "mobilenet_v2"


# ----------------------------------------------------------------------
# backbones
# ----------------------------------------------------------------------


@declare_out_channels(_resnet_channels)
@check_with(_check_resnet)
def resnet(
    depth: Literal[18, 34, 50, 101, 152] = 50,
    weights: str | None = None,
    out_indices: list[int] = (0, 1, 2, 3),
    frozen_stages: int | None = None,
    trainable_layers: int | None = None,
    norm: Norm | None = None,
    norm_eval: bool = False,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
):
    """torchvision ResNet; returns the stages in ``out_indices`` (0 = layer1 ... 3 = layer4)."""
    from detcore.models import backbones

    return backbones.resnet(depth, weights, out_indices, frozen_stages, trainable_layers, norm, norm_eval,
                            bn_eps, bn_momentum)


@declare_out_channels(_mobilenet_channels(_v3_arch))
@check_with(_check_mobilenet(_v3_arch))
def mobilenet_v3(
    arch: Literal["large", "small"] = "large",
    weights: str | None = None,
    out_indices: list[int] = (4, 5),
    trainable_layers: int | None = None,
    norm: Norm | None = None,
    norm_eval: bool = False,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
):
    """torchvision MobileNetV3 features, cut at its stages like torchvision's FPN models."""
    from detcore.models import backbones

    return backbones.mobilenet(_v3_arch({"arch": arch}), weights, out_indices, trainable_layers, norm, norm_eval,
                               bn_eps, bn_momentum)


@declare_out_channels(_mobilenet_channels(_v2_arch))
@check_with(_check_mobilenet(_v2_arch))
def mobilenet_v2(
    weights: str | None = None,
    out_indices: list[int] = (4, 5),
    trainable_layers: int | None = None,
    norm: Norm | None = None,
    norm_eval: bool = False,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
):
    """torchvision MobileNetV2 features, cut at its stages."""
    from detcore.models import backbones

    return backbones.mobilenet("mobilenet_v2", weights, out_indices, trainable_layers, norm, norm_eval,
                               bn_eps, bn_momentum)


@declare_out_channels(_tiny_channels)
@check_with(_check_tiny)
def tiny(
    width: int = 32,
    blocks: int = 1,
    weights: str | None = None,
    out_indices: list[int] = (1, 2, 3),
    frozen_stages: int = -1,
    norm_eval: bool = False,
):
    """A small residual CNN (strides 4..32, channels width x 1, 2, 4, 8) for CPU demos and tests."""
    from detcore.models import backbones

    return backbones.tiny(width, blocks, weights, out_indices, frozen_stages, norm_eval)


# ----------------------------------------------------------------------
# necks
# ----------------------------------------------------------------------


def fpn(
    in_channels: list[int],
    out_channels: int = 256,
    extra: Literal["none", "maxpool", "p6p7", "p6p7_c5"] = "none",
    norm: Literal["none", "bn", "gn"] = "none",
):
    """torchvision's FeaturePyramidNetwork; ``in_channels`` comes from the backbone."""
    from detcore.models import necks

    return necks.fpn(in_channels, out_channels, extra, norm)


# ----------------------------------------------------------------------
# heads
# ----------------------------------------------------------------------


def rpn_head(in_channels: int, num_anchors: int, conv_depth: int = 1):
    """torchvision's RPNHead."""
    from detcore.models import heads

    return heads.rpn_head(in_channels, num_anchors, conv_depth)


def two_mlp_box_head(in_channels: int, resolution: int, representation_size: int = 1024):
    """torchvision's TwoMLPHead (Faster/Mask R-CNN v1 box head)."""
    from detcore.models import heads

    return heads.two_mlp_box_head(in_channels, resolution, representation_size)


def conv_fc_box_head(
    in_channels: int,
    resolution: int,
    conv_layers: list[int] = (256, 256, 256, 256),
    fc_layers: list[int] = (1024,),
    norm: Literal["none", "bn", "gn"] = "bn",
):
    """torchvision's FastRCNNConvFCHead (the v2 box head)."""
    from detcore.models import heads

    return heads.conv_fc_box_head(in_channels, resolution, conv_layers, fc_layers, norm)


def fast_rcnn_predictor(in_channels: int, num_classes: int):
    """torchvision's FastRCNNPredictor (class scores and per-class box deltas)."""
    from detcore.models import heads

    return heads.fast_rcnn_predictor(in_channels, num_classes)


def mask_rcnn_head(
    in_channels: int,
    layers: list[int] = (256, 256, 256, 256),
    dilation: int = 1,
    norm: Literal["none", "bn", "gn"] = "none",
):
    """torchvision's MaskRCNNHeads (the mask branch's conv tower)."""
    from detcore.models import heads

    return heads.mask_rcnn_head(in_channels, layers, dilation, norm)


def mask_rcnn_predictor(in_channels: int, num_classes: int, dim_reduced: int = 256):
    """torchvision's MaskRCNNPredictor (upsampling conv and per-class mask logits)."""
    from detcore.models import heads

    return heads.mask_rcnn_predictor(in_channels, num_classes, dim_reduced)


def retinanet_head(
    in_channels: int,
    num_anchors: int,
    num_classes: int,
    norm: Literal["none", "gn"] = "none",
    box_loss: Literal["l1", "smooth_l1", "giou", "diou", "ciou"] = "l1",
):
    """torchvision's RetinaNetHead (focal-loss classifier and box regressor)."""
    from detcore.models import heads

    return heads.retinanet_head(in_channels, num_anchors, num_classes, norm, box_loss)


def fcos_head(in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4):
    """torchvision's FCOSHead (classifier, box regressor and centerness)."""
    from detcore.models import heads

    return heads.fcos_head(in_channels, num_anchors, num_classes, num_convs)


# ----------------------------------------------------------------------
# detectors
# ----------------------------------------------------------------------


def _extends(base):
    """The decorated factory also takes every parameter of ``base`` (they
    arrive in its ``**kwargs``), with ``base``'s type hints and defaults:
    ``mask_rcnn`` is ``faster_rcnn``'s signature plus the mask branch,
    written once. The run-file check and ``detcore plugins`` see the merged
    signature (``__signature__``)."""

    def decorate(factory):
        own = inspect.signature(factory)
        params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        names_ = {p.name for p in params}
        params += [p for p in inspect.signature(base).parameters.values() if p.name not in names_]
        factory.__signature__ = own.replace(parameters=params)
        # The hints too: run-file checks evaluate them with get_type_hints,
        # which reads __annotations__, not __signature__.
        factory.__annotations__ = {**base.__annotations__, **factory.__annotations__}
        return factory

    return decorate


def _arguments(factory, given: dict) -> dict:
    """Every parameter of ``factory``'s signature with its value: ``given``
    (the factory's ``locals()``; a ``**kwargs`` dict is spread) plus the
    defaults of those not given. The model code takes this one dict, so no
    default is written twice."""
    given = dict(given)
    code = factory.__code__
    if code.co_flags & inspect.CO_VARKEYWORDS:  # the **kwargs of an _extends factory
        given.update(given.pop(code.co_varnames[code.co_argcount + code.co_kwonlyargcount]))
    bound = inspect.signature(factory).bind(**given)
    bound.apply_defaults()
    return dict(bound.arguments)


_FPN_EXTRA_LEVELS = {"none": 0, "maxpool": 1, "p6p7": 2, "p6p7_c5": 2}


def _check_detector(detector: str):
    def check(args: dict, ctx) -> None:
        if detector == "mask_rcnn":
            ctx.declare(needs_masks=True)  # its mask head trains on target["masks"]
        if args.get("num_classes", 1) < 1:
            raise ConfigCheckError(f"must be >= 1 (without background), got {args['num_classes']}",
                                   key="num_classes")
        backbone = args.get("backbone") or {}
        neck = args.get("neck")
        variant = args.get("variant", "v1")
        channels = None
        if isinstance(backbone, dict) and "type" in backbone:
            comp = ctx.catalog.get("backbone", backbone["type"])
            bargs = {k: v for k, v in backbone.items() if k != "type"}
            bargs.update(names.dense_backbone_defaults(detector, comp.plugin, comp.name, bargs))
            channels = out_channels_of(comp.factory, bargs)
        if channels is not None and isinstance(neck, dict):
            names.check_neck_in_channels(neck.get("in_channels"), channels, backbone["type"])
        weights = args.get("weights")
        if weights is not None and not names.looks_like_path(weights):
            try:
                names.resolve_detector_weights(detector, weights, names.backbone_arch(backbone), variant)
            except ValueError as exc:
                raise ConfigCheckError(str(exc), key="weights") from None
        builtin_neck = neck is None or (isinstance(neck, dict) and neck.get("type") == "fpn")
        neck = neck or {}
        if detector == "fcos" and builtin_neck and neck.get("out_channels", 256) % 32:
            raise ConfigCheckError(
                f"FCOS's head uses GroupNorm(32): out_channels must be divisible by 32, got "
                f"{neck['out_channels']}",
                key="neck.out_channels",
            )
        sizes = args.get("anchor_sizes")
        if sizes is not None and channels is not None and builtin_neck:
            default_extra = {"faster_rcnn": "maxpool", "mask_rcnn": "maxpool"}.get(detector, "p6p7")
            levels = len(channels) + _FPN_EXTRA_LEVELS[neck.get("extra", default_extra if not neck else "none")]
            names.check_anchor_levels(sizes, levels)
        for key in ("min_size", "max_size", "detections_per_img"):
            value = args.get(key)
            values = value if isinstance(value, list) else [value]
            if any(v is not None and v <= 0 for v in values):
                raise ConfigCheckError(f"must be > 0, got {value}", key=key)
        for key in ("score_thresh", "nms_thresh"):
            value = args.get(key)
            if value is not None and not 0 <= value <= 1:
                raise ConfigCheckError(f"must be in [0, 1], got {value}", key=key)
        _check_heads(detector, args, ctx, neck_out=neck.get("out_channels", 256) if builtin_neck else None)

    return check


def _check_heads(detector: str, args: dict, ctx, *, neck_out: int | None) -> None:
    """Run each head table's own check with the arguments the detector will
    pass it (as far as the run file determines them), so a head constraint
    on ``in_channels`` fails at config-check time at ``neck.out_channels``."""

    def arg(name: str):
        return args[name] if name in args else inspect.signature(_DETECTORS[detector]).parameters[name].default

    def passes(**values) -> dict:
        return {k: v for k, v in values.items() if v is not None}

    sources = {"in_channels": "neck.out_channels", "num_classes": "num_classes", "num_anchors": "anchor_sizes",
               "resolution": "roi_output_size"}
    n = args.get("num_classes")
    if detector in ("faster_rcnn", "mask_rcnn"):
        slots = {
            "rpn_head": passes(in_channels=neck_out),
            "box_head": passes(in_channels=neck_out, resolution=arg("roi_output_size")),
            "box_predictor": passes(num_classes=n + 1 if isinstance(n, int) else None),
            "mask_head": passes(in_channels=neck_out),
            "mask_predictor": passes(num_classes=n + 1 if isinstance(n, int) else None),
        }
    else:
        sizes, ratios = arg("anchor_sizes"), arg("aspect_ratios") if detector == "retinanet" else [1.0]
        per_location = (len(sizes[0]) if sizes else 3) * len(ratios) if detector == "retinanet" else 1
        slots = {"head": passes(in_channels=neck_out, num_classes=n, num_anchors=per_location)}
    for slot, provided in slots.items():
        if args.get(slot) is not None and provided:
            ctx.check_child(slot, args[slot], kind="head", provided=provided, sources=sources)


@check_with(_check_detector("faster_rcnn"))
def faster_rcnn(
    num_classes: int,
    backbone: BackboneSpec,
    neck: NeckSpec | None = None,
    rpn_head: RPNHeadSpec | None = None,
    box_head: BoxHeadSpec | None = None,
    box_predictor: PredictorSpec | None = None,
    variant: Literal["v1", "v2"] = "v1",
    weights: str | None = None,
    min_size: int | list[int] | None = None,
    max_size: int = 1333,
    size_divisible: int = 32,
    image_mean: list[float] = (0.485, 0.456, 0.406),
    image_std: list[float] = (0.229, 0.224, 0.225),
    anchor_sizes: list[list[int]] | None = None,
    aspect_ratios: list[float] = (0.5, 1.0, 2.0),
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_nms_thresh: float = 0.7,
    rpn_fg_iou_thresh: float = 0.7,
    rpn_bg_iou_thresh: float = 0.3,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    rpn_score_thresh: float | None = None,
    roi_output_size: int = 7,
    roi_sampling_ratio: int = 2,
    box_fg_iou_thresh: float = 0.5,
    box_bg_iou_thresh: float = 0.5,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
    bbox_reg_weights: list[float] | None = None,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
):
    """Two-stage detector: backbone + neck + RPN + RoI box head (torchvision FasterRCNN)."""
    args = _arguments(faster_rcnn, locals())  # first: the import below adds a local
    from detcore.models.detectors import build_rcnn

    return build_rcnn("faster_rcnn", args)


@check_with(_check_detector("mask_rcnn"))
@_extends(faster_rcnn)
def mask_rcnn(
    num_classes: int,
    backbone: BackboneSpec,
    mask_head: MaskHeadSpec | None = None,
    mask_predictor: PredictorSpec | None = None,
    mask_roi_output_size: int = 14,
    **faster_rcnn_args,
):
    """Faster R-CNN plus a mask branch (torchvision MaskRCNN): instance masks."""
    args = _arguments(mask_rcnn, locals())  # first: the import below adds a local
    from detcore.models.detectors import build_rcnn

    return build_rcnn("mask_rcnn", args)


@check_with(_check_detector("retinanet"))
def retinanet(
    num_classes: int,
    backbone: BackboneSpec,
    neck: NeckSpec | None = None,
    head: DenseHeadSpec | None = None,
    variant: Literal["v1", "v2"] = "v1",
    weights: str | None = None,
    min_size: int | list[int] | None = None,
    max_size: int = 1333,
    size_divisible: int = 32,
    image_mean: list[float] = (0.485, 0.456, 0.406),
    image_std: list[float] = (0.229, 0.224, 0.225),
    anchor_sizes: list[list[int]] | None = None,
    aspect_ratios: list[float] = (0.5, 1.0, 2.0),
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.4,
    topk_candidates: int = 1000,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 300,
):
    """Single-stage anchor-based detector with focal loss (torchvision RetinaNet)."""
    args = _arguments(retinanet, locals())  # first: the import below adds a local
    from detcore.models.detectors import build_single_stage

    return build_single_stage("retinanet", args)


@check_with(_check_detector("fcos"))
def fcos(
    num_classes: int,
    backbone: BackboneSpec,
    neck: NeckSpec | None = None,
    head: DenseHeadSpec | None = None,
    weights: str | None = None,
    min_size: int | list[int] | None = None,
    max_size: int = 1333,
    size_divisible: int = 32,
    image_mean: list[float] = (0.485, 0.456, 0.406),
    image_std: list[float] = (0.229, 0.224, 0.225),
    anchor_sizes: list[list[int]] | None = None,
    center_sampling_radius: float = 1.5,
    topk_candidates: int = 1000,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
):
    """Single-stage anchor-free detector (torchvision FCOS)."""
    args = _arguments(fcos, locals())  # first: the import below adds a local
    from detcore.models.detectors import build_single_stage

    return build_single_stage("fcos", args)


# ----------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------


@hookimpl
def detcore_backbones():
    return {"resnet": resnet, "mobilenet_v3": mobilenet_v3, "mobilenet_v2": mobilenet_v2, "tiny": tiny}


@hookimpl
def detcore_necks():
    return {"fpn": fpn}


@hookimpl
def detcore_heads():
    return {
        "rpn_head": rpn_head,
        "two_mlp_box_head": two_mlp_box_head,
        "conv_fc_box_head": conv_fc_box_head,
        "fast_rcnn_predictor": fast_rcnn_predictor,
        "mask_rcnn_head": mask_rcnn_head,
        "mask_rcnn_predictor": mask_rcnn_predictor,
        "retinanet_head": retinanet_head,
        "fcos_head": fcos_head,
    }


_DETECTORS = {"faster_rcnn": faster_rcnn, "mask_rcnn": mask_rcnn, "retinanet": retinanet, "fcos": fcos}


@hookimpl
def detcore_detectors():
    return dict(_DETECTORS)
