"""The ``gaussian_noise`` transform: a plain callable ``(image, target) ->
(image, target)``, which is all detcore asks of a transform."""

from __future__ import annotations

import torch
from torchvision import tv_tensors


class GaussianNoise:
    def __init__(self, std: float = 8.0, p: float = 0.5):
        self.std = std
        self.p = p
        self.applied = 0  # how many images got noise (the tests read it)

    def __call__(self, image, target):
        if self.std == 0 or torch.rand(()) >= self.p:
            return image, target
        self.applied += 1
        noisy = image.float() + torch.randn(image.shape) * self.std
        if image.dtype == torch.uint8:
            noisy = noisy.round().clamp_(0, 255).to(torch.uint8)
        return tv_tensors.wrap(noisy, like=image) if isinstance(image, tv_tensors.Image) else noisy, target

    def __repr__(self) -> str:
        return f"GaussianNoise(std={self.std}, p={self.p})"
