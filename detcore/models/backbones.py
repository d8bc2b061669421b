"""Backbones: torchvision ResNet and MobileNet trunks cut into feature
extractors (torchvision's ``IntermediateLayerGetter``, so their parameter
names match torchvision's ``backbone.body.*``), and a tiny CNN for CPU demos.

Each returns an ``nn.Module`` whose ``forward(x)`` gives an ``OrderedDict`` of
feature maps named ``"0"``, ``"1"``, ... and whose ``out_channels`` lists their
channel counts.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from detcore.errors import ConfigCheckError
from detcore.models import names, pretrained

_BN_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


class Body(IntermediateLayerGetter):
    """The layers of a classification network up to its last returned stage.

    ``norm_eval`` keeps BatchNorm layers in eval mode while training (their
    running statistics stay fixed; their affine parameters still learn),
    as MMDetection's ``norm_eval``.
    """

    def __init__(self, model: nn.Module, return_layers: dict[str, str], out_channels: list[int],
                 norm_eval: bool = False) -> None:
        super().__init__(model, return_layers)
        self.out_channels = list(out_channels)
        self.norm_eval = norm_eval

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BN_TYPES):
                    m.eval()
        return self


def _freeze(modules) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)


# torchvision's detection builders (``fasterrcnn_*``, ``retinanet_*``,
# ``fcos_*``): plain ``BatchNorm2d`` when the backbone trains from scratch,
# ``FrozenBatchNorm2d`` when it starts from weights, both with eps 1e-5 and
# (BatchNorm) momentum 0.1 -- also for MobileNet, whose classification
# default (eps 1e-3, momentum 0.01) lets the running statistics lag the
# weights far behind at detection learning rates.
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def norm_layer(norm: str | None, pretrained_: bool, eps: float = BN_EPS, momentum: float = BN_MOMENTUM):
    """The normalisation layer class a backbone is built with: ``norm``
    (``"bn"`` or ``"frozen_bn"``; ``None`` picks frozen with weights, plain
    without, as torchvision does)."""
    if norm is None:
        norm = "frozen_bn" if pretrained_ else "bn"
    if norm == "frozen_bn":
        return partial(FrozenBatchNorm2d, eps=eps)
    return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)


def resnet(
    depth: int = 50,
    weights: str | None = None,
    out_indices=(0, 1, 2, 3),
    frozen_stages: int | None = None,
    trainable_layers: int | None = None,
    norm: str | None = None,
    norm_eval: bool = False,
    bn_eps: float = BN_EPS,
    bn_momentum: float = BN_MOMENTUM,
) -> Body:
    """A torchvision ResNet trunk returning the stages in ``out_indices``
    (0 = layer1, stride 4 ... 3 = layer4, stride 32)."""
    from torchvision.models import resnet as tv_resnet

    arch = f"resnet{depth}"
    has_weights = weights is not None
    if pretrained.pretrained_skipped():
        weights = None
    out_indices = names.check_out_indices(out_indices, 4)
    model = getattr(tv_resnet, arch)(weights=None, norm_layer=norm_layer(norm, has_weights, bn_eps, bn_momentum))
    if weights is not None:
        pretrained.load_backbone_weights(model, weights, arch, head_prefixes=("fc.",))
    if trainable_layers is not None:
        # torchvision's own rule (resnet_fpn_backbone): the stem's BatchNorm
        # trains only when all 5 layers do.
        train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        if trainable_layers == 5:
            train.append("bn1")
        for name, p in model.named_parameters():
            if not any(name.startswith(t) for t in train):
                p.requires_grad_(False)
    else:
        frozen = _frozen_stages(frozen_stages, has_weights)
        if frozen >= 0:
            _freeze([model.conv1, model.bn1])
            _freeze(getattr(model, f"layer{i}") for i in range(1, frozen + 1))
    channels = names.RESNET_CHANNELS[depth]
    return_layers = {f"layer{i + 1}": str(k) for k, i in enumerate(out_indices)}
    return Body(model, return_layers, [channels[i] for i in out_indices], norm_eval)


def _frozen_stages(frozen_stages, has_weights) -> int:
    # Only used when trainable_layers is unset (that case freezes by name).
    if frozen_stages is not None:
        return frozen_stages
    # torchvision's default: 3 trainable layers with pretrained weights, all without.
    return 1 if has_weights else -1


def mobilenet(
    arch: str,
    weights: str | None = None,
    out_indices=(4, 5),
    trainable_layers: int | None = None,
    norm: str | None = None,
    norm_eval: bool = False,
    bn_eps: float = BN_EPS,
    bn_momentum: float = BN_MOMENTUM,
) -> Body:
    """A torchvision MobileNet's ``features`` cut at its stages, as
    torchvision's ``_mobilenet_extractor`` does (stage 0 = stem, 1..4 the
    strided blocks, 5 = the last layer; torchvision's FPN models return 4
    and 5)."""
    import torchvision.models as tvm

    has_weights = weights is not None
    if pretrained.pretrained_skipped():
        weights = None
    # Always pass norm_layer: MobileNet's own default is its classification
    # BatchNorm (eps 1e-3, momentum 0.01), not what detection trains with.
    model = getattr(tvm, arch)(weights=None, norm_layer=norm_layer(norm, has_weights, bn_eps, bn_momentum))
    if weights is not None:
        pretrained.load_backbone_weights(model, weights, arch, head_prefixes=("classifier.",))
    features = model.features
    stage_indices = names.MOBILENET_STAGE_INDICES[arch]
    out_indices = names.check_out_indices(out_indices, len(stage_indices))
    num_stages = len(stage_indices)
    if trainable_layers is None:
        trainable_layers = 3 if has_weights else num_stages
    if not 0 <= trainable_layers <= num_stages:
        raise ConfigCheckError(f"must be in 0..{num_stages}, got {trainable_layers}", key="trainable_layers")
    freeze_before = len(features) if trainable_layers == 0 else stage_indices[num_stages - trainable_layers]
    _freeze(features[:freeze_before])
    channels = names.MOBILENET_STAGE_CHANNELS[arch]
    return_layers = {str(stage_indices[i]): str(k) for k, i in enumerate(out_indices)}
    return Body(features, return_layers, [channels[i] for i in out_indices], norm_eval)


class _ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )


class _Block(nn.Module):
    """A ResNet basic block; the first conv downsamples when ``stride`` is 2."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _ConvBN(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class TinyNet(nn.Module):
    """A small residual CNN: a stride-4 stem and four stages of
    ``blocks`` basic blocks (strides 4, 8, 16, 32; channels ``width`` x
    1, 2, 4, 8). Fast on a CPU, for demos and tests."""

    def __init__(self, width: int = 32, blocks: int = 1) -> None:
        super().__init__()
        chans = names.tiny_channels(width)
        self.stem = nn.Sequential(_ConvBN(3, max(width // 2, 8), 2), _ConvBN(max(width // 2, 8), chans[0], 2))
        cin = chans[0]
        for i, c in enumerate(chans):
            layers = [_Block(cin, c, 1 if i == 0 else 2)] + [_Block(c, c, 1) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            cin = c

    def forward(self, x: torch.Tensor) -> OrderedDict:
        out = OrderedDict()
        x = self.stem(x)
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            out[str(i)] = x
        return out


def tiny(width: int = 32, blocks: int = 1, weights: str | None = None, out_indices=(1, 2, 3),
         frozen_stages: int = -1, norm_eval: bool = False) -> Body:
    if pretrained.pretrained_skipped():
        weights = None
    out_indices = names.check_out_indices(out_indices, 4)
    model = TinyNet(width, blocks)
    if weights is not None:
        pretrained.load_backbone_weights(model, weights, None)
    if frozen_stages >= 0:
        _freeze([model.stem])
        _freeze(getattr(model, f"layer{i}") for i in range(1, frozen_stages + 1))
    chans = names.tiny_channels(width)
    return_layers = {f"layer{i + 1}": str(k) for k, i in enumerate(out_indices)}
    return Body(model, return_layers, [chans[i] for i in out_indices], norm_eval)
