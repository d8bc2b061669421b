"""Normalisation layers shared by the built-in necks and heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also takes one image whose groups hold a single
    value (one channel per group on a 1x1 map: FCOS's GroupNorm(32) on a
    32-channel P7 of a small image). torch refuses that batch ("Expected more
    than 1 value per channel") although the result is defined and is what
    the same image gives inside a larger batch, since each image is
    normalised on its own: computed here on the image stacked twice."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] == 1 and x.shape[1] == self.num_groups and x.numel() == x.shape[1]:
            return F.group_norm(torch.cat([x, x]), self.num_groups, self.weight, self.bias, self.eps)[:1]
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def batch_safe_group_norms(module: nn.Module) -> nn.Module:
    """Make every ``nn.GroupNorm`` in ``module`` (built by a torchvision head
    that takes no norm layer argument) a :class:`GroupNorm`: same
    parameters, names and numbers."""
    for m in module.modules():
        if type(m) is nn.GroupNorm:
            m.__class__ = GroupNorm
    return module
