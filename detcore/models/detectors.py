"""Detectors on torchvision's detection classes, with torchvision's module
names (``backbone.body``, ``backbone.fpn``, ``rpn.head``, ``roi_heads.*``,
``head.*``) so torchvision's COCO checkpoints load key for key.

Labels in and out are 0-based contiguous class indices. The R-CNN family
reserves index 0 for the background inside the model: targets are shifted
up by one on the way in and detections down by one on the way out.
"""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace
from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection import faster_rcnn as tv_faster_rcnn
from torchvision.models.detection import fcos as tv_fcos
from torchvision.models.detection import mask_rcnn as tv_mask_rcnn
from torchvision.models.detection import retinanet as tv_retinanet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import (
    GeneralizedRCNNTransform,
    _resize_image_and_masks,
    resize_boxes,
    resize_keypoints,
)
from torchvision.ops import MultiScaleRoIAlign

from detcore.errors import ConfigCheckError
from detcore.models import heads, names, necks, pretrained

log = logging.getLogger("detcore")

# Factory arguments handed to torchvision's FasterRCNN/MaskRCNN under the same name.
_RCNN_PASSED_ON = (
    "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test",
    "rpn_nms_thresh", "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_batch_size_per_image",
    "rpn_positive_fraction", "rpn_score_thresh", "box_fg_iou_thresh", "box_bg_iou_thresh",
    "box_batch_size_per_image", "box_positive_fraction",
)


class BackboneWithNeck(nn.Module):
    """``body`` (the backbone) then ``fpn`` (the neck, whatever its type: the
    attribute keeps torchvision's ``BackboneWithFPN`` name so checkpoints
    load). ``out_channels`` is the neck's."""

    def __init__(self, body: nn.Module, fpn: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn
        self.out_channels = int(fpn.out_channels)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.fpn(self.body(x))


class DetTransform(GeneralizedRCNNTransform):
    """torchvision's batching/normalising transform. With ``keep_size`` it
    does not resize (the data pipeline decides the input size).
    ``label_offset`` is added to target labels on the way in and taken off
    detections on the way out: the R-CNN family keeps class 0 for the
    background. Both happen here, in methods torchvision's detectors call,
    so the detectors stay scriptable with TorchScript."""

    def __init__(self, min_size, max_size: int, image_mean, image_std, size_divisible: int = 32,
                 label_offset: int = 0) -> None:
        keep = min_size is None
        super().__init__(
            800 if keep else min_size, max_size, list(image_mean), list(image_std), size_divisible=size_divisible
        )
        self.keep_size = keep
        self.label_offset = label_offset

    # Optional[...], not "X | None": TorchScript compiles these methods.
    def resize(
        self, image: Tensor, target: Optional[dict[str, Tensor]] = None  # noqa: UP045
    ) -> tuple[Tensor, Optional[dict[str, Tensor]]]:  # noqa: UP045
        # forward() hands each target here once, as a copy of the caller's dict.
        if target is not None and self.label_offset != 0:
            target["labels"] = target["labels"] + self.label_offset
        if self.keep_size:
            return image, target
        # torchvision's GeneralizedRCNNTransform.resize (super() cannot be
        # called from TorchScript).
        h, w = image.shape[-2:]
        if self.training:
            size = self.torch_choice(self.min_size)
        else:
            size = self.min_size[-1]
        image, target = _resize_image_and_masks(image, size, self.max_size, target, self.fixed_size)
        if target is None:
            return image, target
        target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
        if "keypoints" in target:
            target["keypoints"] = resize_keypoints(target["keypoints"], (h, w), image.shape[-2:])
        return image, target

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        # torchvision's GeneralizedRCNNTransform.postprocess plus the label shift.
        if self.training:
            return result
        for i, (pred, im_s, o_im_s) in enumerate(zip(result, image_shapes, original_image_sizes)):
            boxes = resize_boxes(pred["boxes"], im_s, o_im_s)
            result[i]["boxes"] = boxes
            if self.label_offset != 0:
                result[i]["labels"] = pred["labels"] - self.label_offset
            if "masks" in pred:
                result[i]["masks"] = paste_masks_in_image(pred["masks"], boxes, o_im_s)
            if "keypoints" in pred:
                result[i]["keypoints"] = resize_keypoints(pred["keypoints"], im_s, o_im_s)
        return result


class FasterRCNN(tv_faster_rcnn.FasterRCNN):
    """torchvision's Faster R-CNN; its ``transform`` (a :class:`DetTransform`
    with ``label_offset = 1``) makes labels 0-based in and out."""


class MaskRCNN(tv_mask_rcnn.MaskRCNN):
    """torchvision's Mask R-CNN; labels 0-based in and out as for FasterRCNN."""


class RetinaNet(tv_retinanet.RetinaNet):
    """torchvision's RetinaNet (its sigmoid classifier takes 0-based labels as they are)."""


class FCOS(tv_fcos.FCOS):
    """torchvision's FCOS (its sigmoid classifier takes 0-based labels as they are)."""


# Key prefixes of the layers whose shape depends on num_classes: skipped
# (and re-initialised) when pretrained weights have another class count.
CLASS_LAYERS = {
    "faster_rcnn": ("roi_heads.box_predictor.",),
    "mask_rcnn": ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
    "retinanet": ("head.classification_head.cls_logits.",),
    "fcos": ("head.classification_head.cls_logits.",),
}

# ----------------------------------------------------------------------
# building
# ----------------------------------------------------------------------


def _accepts(spec, name: str) -> bool:
    params = inspect.signature(spec.component.factory).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _backbone_extra(detector: str, spec, weights: str | None, variant: str) -> dict:
    """Backbone arguments the detector sets where the run file does not:
    C3-C5 for RetinaNet/FCOS, and under detector weights what torchvision
    uses: frozen BatchNorm (v1) and 3 trainable layers; the detector's
    weights replace the backbone's own."""
    args = spec.args
    extra = names.dense_backbone_defaults(detector, spec.component.plugin, spec.component.name, args)
    if variant == "v2" and "norm" not in args and _accepts(spec, "norm"):
        # torchvision's *_v2 builders train the backbone's BatchNorm, also
        # from backbone or detector weights.
        extra["norm"] = "bn"
    if weights is None:
        return extra
    if "norm" not in args and _accepts(spec, "norm"):
        extra["norm"] = "frozen_bn" if variant == "v1" else "bn"
    if not {"trainable_layers", "frozen_stages"} & set(args) and _accepts(spec, "trainable_layers"):
        extra["trainable_layers"] = 3
    if args.get("weights") is not None:
        log.info("model.backbone.weights ignored: the detector's weights '%s' replace them", weights)
        extra["weights"] = None
    return extra


def build_features(detector: str, backbone, neck, *, weights, variant, default_neck: dict) -> BackboneWithNeck:
    body = backbone(**_backbone_extra(detector, backbone, weights, variant))
    in_channels = [int(c) for c in body.out_channels]
    if neck is None:
        fpn = necks.fpn(in_channels, **default_neck)
    else:
        names.check_neck_in_channels(neck.args.get("in_channels"), in_channels, backbone.type)
        fpn = neck(in_channels=in_channels)
    return BackboneWithNeck(body, fpn)


@torch.no_grad()
def _probe(features: BackboneWithNeck) -> tuple[list[str], list[str]]:
    """Names of the backbone's and the neck's feature maps (a tiny forward
    pass in eval mode, so BatchNorm statistics are untouched)."""
    was_training = features.training
    features.eval()
    try:
        x = torch.zeros(1, 3, 128, 128)
        body_out = features.body(x)
        neck_out = features.fpn(body_out)
    finally:
        features.train(was_training)
    return list(body_out), list(neck_out)


def _anchors(sizes, ratios, levels: int, default_sizes) -> AnchorGenerator:
    sizes = [list(s) for s in sizes] if sizes is not None else default_sizes(levels)
    names.check_anchor_levels(sizes, levels)
    if len({len(s) for s in sizes}) != 1:
        raise ConfigCheckError("every level needs the same number of anchor sizes", key="anchor_sizes")
    return AnchorGenerator(tuple(tuple(int(v) for v in s) for s in sizes),
                           (tuple(float(r) for r in ratios),) * levels)


def _rcnn_sizes(levels: int) -> list[list[int]]:
    return [[32 * 2**i] for i in range(levels)]


def _mobilenet_sizes(levels: int) -> list[list[int]]:
    return [[32, 64, 128, 256, 512] for _ in range(levels)]


def _retinanet_sizes(levels: int) -> list[list[int]]:
    return [[x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))] for x in (32 * 2**i for i in range(levels))]


def _fcos_sizes(levels: int) -> list[list[int]]:
    return [[8 * 2**i] for i in range(levels)]


# The detector's key each argument it passes to a head slot derives from:
# a head's complaint about one is reported there (detcore.check_with).
_PASSED_FROM = {"in_channels": "neck.out_channels", "num_classes": "num_classes",
                "num_anchors": "anchor_sizes", "resolution": "roi_output_size"}


def _head(spec, default, *, sources: dict | None = None, **provided):
    if spec is None:
        return default(**provided)
    sources = {**_PASSED_FROM, **(sources or {})}
    return spec.from_keys(**{k: v for k, v in sources.items() if k in provided})(**provided)


def _finish(model, detector: str, a: SimpleNamespace):
    offset = 1 if detector in ("faster_rcnn", "mask_rcnn") else 0
    model.transform = DetTransform(a.min_size, a.max_size, a.image_mean, a.image_std, a.size_divisible, offset)
    model.class_layers = CLASS_LAYERS[detector]
    model.weights_report = None
    if a.weights is not None:
        arch = names.backbone_arch(a.backbone.table)
        variant = getattr(a, "variant", "v1")
        if not pretrained.pretrained_skipped():
            model.weights_report = pretrained.load_detector_weights(model, detector, a.weights, arch, variant)
        pretrained.set_weights_eps(model, detector, a.weights, arch, variant)
    return model


def build_rcnn(detector: str, args: dict):
    """Faster or Mask R-CNN from the complete arguments of its factory
    (:func:`detcore.builtin.models.faster_rcnn` / ``mask_rcnn``, every
    parameter present: the factory's signature is the one place that
    declares them and their defaults)."""
    a = SimpleNamespace(**args)
    backbone, num_classes, variant, weights = a.backbone, a.num_classes, a.variant, a.weights
    v2 = variant == "v2"
    features = build_features(
        detector, backbone, a.neck, weights=weights, variant=variant,
        default_neck={"out_channels": 256, "extra": "maxpool", "norm": "bn" if v2 else "none"},
    )
    body_names, neck_names = _probe(features)
    mobilenet = backbone.type in ("mobilenet_v3", "mobilenet_v2")
    default_sizes = _mobilenet_sizes if mobilenet else _rcnn_sizes
    if a.rpn_score_thresh is None:
        # torchvision's fasterrcnn_mobilenet_v3_large(_320)_fpn drop proposals below 0.05
        args = {**args, "rpn_score_thresh": 0.05 if mobilenet else 0.0}
    anchor_gen = _anchors(a.anchor_sizes, a.aspect_ratios, len(neck_names), default_sizes)
    channels = features.out_channels
    rpn = _head(a.rpn_head, heads.rpn_head, in_channels=channels,
                num_anchors=anchor_gen.num_anchors_per_location()[0],
                **({} if a.rpn_head is not None else {"conv_depth": 2 if v2 else 1}))
    roi_names = [n for n in body_names if n in neck_names]
    box_pool = MultiScaleRoIAlign(roi_names, a.roi_output_size, a.roi_sampling_ratio)
    box_default = heads.conv_fc_box_head if v2 else heads.two_mlp_box_head
    bhead = _head(a.box_head, box_default, in_channels=channels, resolution=a.roi_output_size)
    rep = _out_channels(bhead, "box_head")
    predictor = _head(a.box_predictor, heads.fast_rcnn_predictor, sources={"in_channels": "box_head"},
                      in_channels=rep, num_classes=num_classes + 1)
    kwargs = {k: args[k] for k in _RCNN_PASSED_ON}
    kwargs.update(
        rpn_anchor_generator=anchor_gen,
        rpn_head=rpn,
        box_roi_pool=box_pool,
        box_head=bhead,
        box_predictor=predictor,
        box_score_thresh=a.score_thresh,
        box_nms_thresh=a.nms_thresh,
        box_detections_per_img=a.detections_per_img,
        bbox_reg_weights=tuple(a.bbox_reg_weights) if a.bbox_reg_weights is not None else None,
    )
    if detector == "mask_rcnn":
        mask_pool = MultiScaleRoIAlign(roi_names, a.mask_roi_output_size, a.roi_sampling_ratio)
        mhead = _head(a.mask_head, heads.mask_rcnn_head, in_channels=channels,
                      **({} if a.mask_head is not None else {"norm": "bn" if v2 else "none"}))
        mpred = _head(a.mask_predictor, heads.mask_rcnn_predictor, sources={"in_channels": "mask_head"},
                      in_channels=_out_channels(mhead, "mask_head"),
                      num_classes=num_classes + 1)
        model = MaskRCNN(features, None, mask_roi_pool=mask_pool, mask_head=mhead, mask_predictor=mpred, **kwargs)
    else:
        model = FasterRCNN(features, None, **kwargs)
    return _finish(model, detector, a)


def _out_channels(module, slot: str) -> int:
    out = getattr(module, "out_channels", None)
    if not isinstance(out, int):
        raise ConfigCheckError(
            f"the {slot} module ({type(module).__name__}) has no integer 'out_channels' attribute; "
            f"the predictor after it needs its output size",
            key=slot,
        )
    return out


def build_single_stage(detector: str, args: dict):
    """RetinaNet or FCOS from the complete arguments of its factory
    (:func:`detcore.builtin.models.retinanet` / ``fcos``)."""
    a = SimpleNamespace(**args)
    backbone, num_classes, weights = a.backbone, a.num_classes, a.weights
    variant = getattr(a, "variant", "v1")  # FCOS has one variant
    v2 = variant == "v2"
    if detector == "retinanet":
        default_neck = {"out_channels": 256, "extra": "p6p7_c5" if v2 else "p6p7"}
    else:
        default_neck = {"out_channels": 256, "extra": "p6p7"}
    features = build_features(detector, backbone, a.neck, weights=weights, variant=variant, default_neck=default_neck)
    _, neck_names = _probe(features)
    levels = len(neck_names)
    channels = features.out_channels
    if detector == "retinanet":
        ratios = a.aspect_ratios
        anchor_gen = _anchors(a.anchor_sizes, ratios, levels, _retinanet_sizes)
        h = _head(a.head, heads.retinanet_head, in_channels=channels,
                  num_anchors=anchor_gen.num_anchors_per_location()[0], num_classes=num_classes,
                  **({} if a.head is not None else ({"norm": "gn", "box_loss": "giou"} if v2 else {})))
        model = RetinaNet(
            features, num_classes, anchor_generator=anchor_gen, head=h, score_thresh=a.score_thresh,
            nms_thresh=a.nms_thresh, detections_per_img=a.detections_per_img, fg_iou_thresh=a.fg_iou_thresh,
            bg_iou_thresh=a.bg_iou_thresh, topk_candidates=a.topk_candidates,
        )
    else:
        ratios = (1.0,)  # FCOS: one anchor (point) per location
        anchor_gen = _anchors(a.anchor_sizes, ratios, levels, _fcos_sizes)
        if anchor_gen.num_anchors_per_location()[0] != 1:
            raise ConfigCheckError("FCOS needs one anchor per location: one size per level and "
                                   "aspect_ratios = [1.0]", key="anchor_sizes")
        h = _head(a.head, heads.fcos_head, in_channels=channels, num_anchors=1, num_classes=num_classes)
        model = FCOS(
            features, num_classes, anchor_generator=anchor_gen, head=h,
            center_sampling_radius=a.center_sampling_radius, score_thresh=a.score_thresh,
            nms_thresh=a.nms_thresh, detections_per_img=a.detections_per_img, topk_candidates=a.topk_candidates,
        )
    return _finish(model, detector, a)


__all__ = ["FCOS", "BackboneWithNeck", "DetTransform", "FasterRCNN", "MaskRCNN", "RetinaNet",
           "build_rcnn", "build_single_stage"]
