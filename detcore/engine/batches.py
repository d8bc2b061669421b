"""Batches to the device and back: images as float 0..1, targets without
crowd boxes, model outputs mapped back to the original image.

The one conversion that training, evaluation, ``detcore predict`` and
``detcore benchmark`` share, so every path feeds the model the same tensors.
"""

from __future__ import annotations

__all__ = ["batch_to_device", "image_to_float", "target_to_device", "to_original"]


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


def to_original(output: dict, input_hw: tuple[int, int], orig_hw, *, clamp: bool = False) -> dict:
    """One model output (``boxes``, ``scores``, ``labels``, optional
    ``masks``) mapped from the pixels of the image passed to the model
    (``input_hw``) back to the original image (``orig_hw``, a pair or a
    tensor): CPU tensors, boxes rescaled (``clamp``: clipped to the image),
    masks uint8 ``[K, 1, H, W]`` at the original size. Evaluation and
    ``detcore predict`` both map outputs with it."""
    import torch
    import torch.nn.functional as F

    h, w = input_hw
    if isinstance(orig_hw, torch.Tensor):
        orig_hw = orig_hw.tolist()
    oh, ow = int(orig_hw[0]), int(orig_hw[1])
    boxes = output["boxes"].detach().float().cpu()
    if (oh, ow) != (h, w) and len(boxes):
        boxes = boxes * torch.tensor([ow / w, oh / h, ow / w, oh / h])
    if clamp and len(boxes):
        boxes = boxes.clone()  # .float().cpu() may have returned the model's own tensor
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
    pred = {
        "boxes": boxes,
        "scores": output["scores"].detach().float().cpu(),
        "labels": output["labels"].detach().to(torch.int64).cpu(),
    }
    if "masks" in output:
        masks = output["masks"].detach()
        if masks.ndim == 3:
            masks = masks[:, None]
        masks = masks[..., :h, :w].float()
        if (oh, ow) != tuple(masks.shape[-2:]) and len(masks):
            masks = F.interpolate(masks, size=(oh, ow), mode="bilinear", align_corners=False)
        elif not len(masks):
            masks = masks.new_zeros((0, 1, oh, ow))
        pred["masks"] = (masks > 0.5).to(torch.uint8).cpu()
    return pred
