"""Necks: torchvision's FeaturePyramidNetwork with its extra-level blocks."""

from __future__ import annotations

from torch import nn
from torchvision.ops.feature_pyramid_network import (
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from detcore.errors import ConfigCheckError
from detcore.models.norms import GroupNorm


class FPN(FeaturePyramidNetwork):
    """torchvision's FPN with an ``out_channels`` attribute (what detectors
    read). Parameter names are torchvision's (``inner_blocks``,
    ``layer_blocks``, ``extra_blocks``)."""

    def __init__(self, in_channels: list[int], out_channels: int, extra_blocks=None, norm_layer=None):
        super().__init__(in_channels, out_channels, extra_blocks=extra_blocks, norm_layer=norm_layer)
        self.out_channels = out_channels
        self.in_channels = list(in_channels)


def fpn(in_channels: list[int], out_channels: int = 256, extra: str = "none", norm: str = "none") -> FPN:
    """``extra``: ``"maxpool"`` adds a max-pooled level (Faster/Mask R-CNN),
    ``"p6p7"`` two stride-2 convs on P5 (RetinaNet/FCOS), ``"p6p7_c5"`` the
    same on the backbone's last map C5 (RetinaNet v2)."""
    if out_channels <= 0:
        raise ConfigCheckError(f"must be > 0, got {out_channels}", key="out_channels")
    extra_blocks = {
        "none": lambda: None,
        "maxpool": LastLevelMaxPool,
        "p6p7": lambda: LastLevelP6P7(out_channels, out_channels),
        "p6p7_c5": lambda: LastLevelP6P7(in_channels[-1], out_channels),
    }[extra]()
    norm_layer = {"none": None, "bn": nn.BatchNorm2d, "gn": lambda c: GroupNorm(32, c)}[norm]
    if norm == "gn" and out_channels % 32:
        raise ConfigCheckError(f"norm = 'gn' needs out_channels divisible by 32, got {out_channels}",
                               key="out_channels")
    return FPN(list(in_channels), out_channels, extra_blocks, norm_layer)
