"""The ``example_convnet`` backbone."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


def _conv(cin: int, cout: int, norm: str) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, 2, 1, bias=norm == "none")]
    if norm == "bn":
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    """``forward(x)`` returns an ``OrderedDict`` with one feature map per
    stage (strides 4, 8, 16, ...); ``out_channels`` lists their channels, as
    detcore's backbone contract asks (necks read it)."""

    def __init__(self, widths: list[int], norm: str = "bn"):
        super().__init__()
        self.stem = _conv(3, widths[0], norm)
        cin = widths[0]
        self.stages = nn.ModuleList()
        for w in widths:
            self.stages.append(_conv(cin, w, norm))
            cin = w
        self.out_channels = list(widths)

    def forward(self, x):
        x = self.stem(x)
        out = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            out[str(i)] = x
        return out
