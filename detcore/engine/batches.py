"""Batches to the device: images as float 0..1, targets without crowd boxes.

The one conversion that training, evaluation, ``detcore predict`` and
``detcore benchmark`` share, so every path feeds the model the same tensors.
"""

from __future__ import annotations

__all__ = ["batch_to_device", "image_to_float", "target_to_device"]


def image_to_float(image, device):
    """A uint8 (or float 0..1) image ``[3, H, W]`` as float 0..1 on ``device``
    (the conversion runs on the device, after the uint8 copy)."""
    import torch

    image = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    image = image.to(device, non_blocking=True)
    return image.float().div_(255) if not image.is_floating_point() else image.float()


def target_to_device(t: dict, device) -> dict:
    """The target on ``device`` without its crowd boxes: datasets keep
    them (``iscrowd`` 1, ignore regions for evaluation) but the models
    would train on them as objects."""
    import torch

    keep = None
    crowd = t.get("iscrowd")
    if isinstance(crowd, torch.Tensor) and crowd.numel() and bool(crowd.any()):
        keep = crowd.as_subclass(torch.Tensor) == 0
    out = {}
    for k, v in t.items():
        if isinstance(v, torch.Tensor):
            v = v.as_subclass(torch.Tensor)
            if keep is not None and k in ("boxes", "labels", "masks", "iscrowd", "area"):
                v = v[keep]
            v = v.to(device, non_blocking=True)
            if k == "boxes":
                v = v.float()
        out[k] = v
    return out


def batch_to_device(images, targets, device) -> tuple[list, list[dict]]:
    """A training batch ``(images, targets)`` from the loader, on ``device``."""
    return [image_to_float(i, device) for i in images], [target_to_device(t, device) for t in targets]
