"""Detection heads: torchvision's, built from plain arguments.

Each slot of a detector receives the arguments listed in docs/models.md
("Head slots") and must return a module with the interface of the
torchvision head it replaces.
"""

from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.rpn import RPNHead

from detcore.errors import ConfigCheckError
from detcore.models.norms import GroupNorm, batch_safe_group_norms


def _norm(norm: str, groups: int = 32):
    return {"none": None, "bn": nn.BatchNorm2d, "gn": partial(GroupNorm, groups)}[norm]


def rpn_head(in_channels: int, num_anchors: int, conv_depth: int = 1) -> RPNHead:
    return RPNHead(in_channels, num_anchors, conv_depth=conv_depth)


def two_mlp_box_head(in_channels: int, resolution: int, representation_size: int = 1024) -> TwoMLPHead:
    head = TwoMLPHead(in_channels * resolution**2, representation_size)
    head.out_channels = representation_size
    return head


def conv_fc_box_head(in_channels: int, resolution: int, conv_layers=(256, 256, 256, 256),
                     fc_layers=(1024,), norm: str = "bn") -> FastRCNNConvFCHead:
    if not fc_layers:
        raise ConfigCheckError("needs at least one fully connected layer", key="fc_layers")
    head = FastRCNNConvFCHead((in_channels, resolution, resolution), list(conv_layers), list(fc_layers),
                              norm_layer=_norm(norm))
    head.out_channels = list(fc_layers)[-1]
    return head


def fast_rcnn_predictor(in_channels: int, num_classes: int) -> FastRCNNPredictor:
    return FastRCNNPredictor(in_channels, num_classes)


def mask_rcnn_head(in_channels: int, layers=(256, 256, 256, 256), dilation: int = 1,
                   norm: str = "none") -> MaskRCNNHeads:
    head = MaskRCNNHeads(in_channels, list(layers), dilation, norm_layer=_norm(norm))
    head.out_channels = list(layers)[-1]
    return head


def mask_rcnn_predictor(in_channels: int, num_classes: int, dim_reduced: int = 256) -> MaskRCNNPredictor:
    return MaskRCNNPredictor(in_channels, dim_reduced, num_classes)


def retinanet_head(in_channels: int, num_anchors: int, num_classes: int, norm: str = "none",
                   box_loss: str = "l1") -> RetinaNetHead:
    if norm == "gn" and in_channels % 32:
        raise ConfigCheckError(
            f"norm = 'gn' needs the neck's out_channels divisible by 32, got {in_channels}", key="norm"
        )
    head = RetinaNetHead(in_channels, num_anchors, num_classes, norm_layer=_norm(norm))
    head.regression_head._loss_type = box_loss
    return head


def fcos_head(in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4) -> FCOSHead:
    if in_channels % 32:
        raise ConfigCheckError(
            f"the FCOS head's GroupNorm(32) needs the neck's out_channels divisible by 32, got {in_channels}"
        )
    # FCOSHead builds its GroupNorm(32) itself
    return batch_safe_group_norms(FCOSHead(in_channels, num_anchors, num_classes, num_convs=num_convs))
