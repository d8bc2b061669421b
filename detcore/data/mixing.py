"""Multi-image mixing: Mosaic, MixUp and Copy-Paste as one dataset wrapper
(MMDetection's ``MultiImageMixDataset``; YOLOX's and Ultralytics' mosaic and
mixup; Simple Copy-Paste for instance masks).

Items of the wrapped dataset (its own transforms applied) are mixed, then the
wrapper's ``transforms`` run on the mixed item (with clipping and dropping of
emptied boxes, as every dataset pipeline ends). Boxes and masks travel with
the pixels: every operation moves both the same way, and Copy-Paste
recomputes the boxes of partly covered objects from their masks.

``close_last_epochs`` turns mixing off for the last epochs (YOLOX's "no aug"
epochs, Ultralytics' ``close_mosaic``): the runner tells every dataset with a
``set_epoch(epoch, max_epochs)`` method which epoch starts.
"""

from __future__ import annotations

import math

import torch
import torch.utils.data

from detcore.errors import ConfigCheckError

__all__ = ["MultiImageMix", "epoch_dependent", "set_dataset_epoch"]

FILL = 114  # the grey YOLOX and Ultralytics pad mosaics with


def _nested(dataset):
    """``dataset`` and every dataset it wraps (``.dataset`` / ``.datasets``)."""
    seen, stack = set(), [dataset]
    while stack:
        d = stack.pop()
        if d is None or id(d) in seen:
            continue
        seen.add(id(d))
        yield d
        stack.extend(vars(d).get("datasets", []) or [])
        stack.append(vars(d).get("dataset"))


def set_dataset_epoch(dataset, epoch: int, max_epochs: int) -> None:
    """Call ``set_epoch(epoch, max_epochs)`` on ``dataset`` and on every
    dataset it wraps that has one."""
    for d in _nested(dataset):
        if callable(getattr(type(d), "set_epoch", None)):
            d.set_epoch(epoch, max_epochs)


def epoch_dependent(dataset) -> bool:
    """Whether ``dataset`` (or one it wraps) changes with the epoch."""
    return any(getattr(d, "close_last_epochs", 0) for d in _nested(dataset) if isinstance(d, MultiImageMix))


def _resize(image, masks, scale: float):
    """``image`` [3, H, W] (and ``masks`` [K, H, W], nearest) scaled by ``scale``."""
    from torchvision.transforms.v2 import functional as F

    h, w = image.shape[-2:]
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    image = F.resize(torch.as_tensor(image), size, antialias=True)
    if masks is not None:
        masks = F.resize(torch.as_tensor(masks), size, interpolation=F.InterpolationMode.NEAREST)
    return image, masks


def _plain(image, target):
    """Tensors without tv_tensors wrappers: ``(image, boxes, labels, masks or None, extra)``."""
    boxes = torch.as_tensor(target["boxes"]).float().reshape(-1, 4)
    labels = torch.as_tensor(target["labels"]).long().reshape(-1)
    masks = torch.as_tensor(target["masks"]) if "masks" in target else None
    iscrowd = torch.as_tensor(target.get("iscrowd", torch.zeros(len(labels), dtype=torch.int64))).long()
    return torch.as_tensor(image), boxes, labels, masks, iscrowd


def _boxes_of(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes of binary masks [K, H, W] (zeros for empty masks)."""
    k = masks.shape[0]
    out = torch.zeros(k, 4)
    if k == 0:
        return out
    rows, cols = masks.any(2), masks.any(1)
    for i in range(k):
        ys, xs = torch.nonzero(rows[i]).flatten(), torch.nonzero(cols[i]).flatten()
        if len(ys):
            out[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return out


class MultiImageMix(torch.utils.data.Dataset):
    """``dataset`` with Mosaic (probability ``mosaic_p``: four items on a
    ``2 * mosaic_size`` square canvas around a random centre, each scaled so
    its longer side is ``mosaic_size``), then MixUp (``mixup_p``: blended
    with another such item, ratio ~ Beta(``mixup_alpha``, ``mixup_alpha``),
    objects of both kept) and Copy-Paste (``copy_paste_p``, items with
    ``masks``: a random half of another item's objects pasted over this
    one, covered parts removed from the masks and boxes recomputed from
    them), then ``transforms``. Mixing stops for the last
    ``close_last_epochs`` epochs (the items then pass through unmixed, with
    ``transforms``)."""

    def __init__(self, dataset, *, transforms=None, mosaic_p: float = 1.0, mosaic_size: int = 640,
                 mixup_p: float = 0.0, mixup_alpha: float = 32.0, copy_paste_p: float = 0.0,
                 close_last_epochs: int = 0):
        from detcore.data.transforms import build_pipeline

        for key, p in (("mosaic_p", mosaic_p), ("mixup_p", mixup_p), ("copy_paste_p", copy_paste_p)):
            if not 0 <= p <= 1:
                raise ConfigCheckError(f"must be in [0, 1], got {p}", key=key)
        if mosaic_size < 8:
            raise ConfigCheckError(f"must be >= 8 pixels, got {mosaic_size}", key="mosaic_size")
        if close_last_epochs < 0:
            raise ConfigCheckError(f"must be >= 0, got {close_last_epochs}", key="close_last_epochs")
        self.dataset = dataset
        self.transforms = transforms if callable(transforms) else build_pipeline(transforms)
        self.mosaic_p, self.mosaic_size = float(mosaic_p), int(mosaic_size)
        self.mixup_p, self.mixup_alpha, self.copy_paste_p = float(mixup_p), float(mixup_alpha), float(copy_paste_p)
        self.close_last_epochs = int(close_last_epochs)
        self.mixing = True
        self.class_names = list(getattr(dataset, "class_names", []))
        ratios = getattr(dataset, "aspect_ratios", None)
        if ratios is not None:
            # a mosaic is square; grouping only needs the typical shape
            self.aspect_ratios = [1.0] * len(dataset) if self.mosaic_p >= 0.5 else list(ratios)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        # cat_ids, palette and the like come from the wrapped dataset
        if name in ("dataset",) or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        self.mixing = not (self.close_last_epochs and epoch >= max_epochs - self.close_last_epochs)

    # ------------------------------------------------------------------

    def _random_index(self) -> int:
        return int(torch.randint(len(self.dataset), (1,)))

    def _item(self, idx: int):
        return _plain(*self.dataset[idx])

    def _base(self, idx: int):
        if self.mosaic_p and torch.rand(1).item() < self.mosaic_p:
            return self._mosaic([idx] + [self._random_index() for _ in range(3)])
        return self._item(idx)

    def __getitem__(self, idx: int):
        from torchvision import tv_tensors

        if not self.mixing:
            image, target = self.dataset[idx]
            return self.transforms(image, target)
        image, boxes, labels, masks, iscrowd = self._base(idx)
        if self.mixup_p and torch.rand(1).item() < self.mixup_p:
            image, boxes, labels, masks, iscrowd = self._mixup((image, boxes, labels, masks, iscrowd),
                                                               self._base(self._random_index()))
        if self.copy_paste_p and masks is not None and torch.rand(1).item() < self.copy_paste_p:
            image, boxes, labels, masks, iscrowd = self._copy_paste((image, boxes, labels, masks, iscrowd),
                                                                    self._item(self._random_index()))
        h, w = image.shape[-2:]
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": labels,
            "iscrowd": iscrowd,
            "image_id": -1,  # a mixed item is no single annotated image
            "orig_size": (h, w),
        }
        if masks is not None:
            target["masks"] = tv_tensors.Mask(masks)
        return self.transforms(tv_tensors.Image(image), target)

    def _mosaic(self, indices: list[int]):
        s = self.mosaic_size
        xc = int(torch.randint(s // 2, s + s // 2 + 1, (1,)))
        yc = int(torch.randint(s // 2, s + s // 2 + 1, (1,)))
        items = [self._item(i) for i in indices]
        with_masks = all(it[3] is not None for it in items)
        canvas = torch.full((3, 2 * s, 2 * s), FILL, dtype=items[0][0].dtype)
        out_boxes, out_labels, out_masks, out_crowd = [], [], [], []
        for corner, (image, boxes, labels, masks, iscrowd) in enumerate(items):
            h0, w0 = image.shape[-2:]
            scale = s / max(h0, w0)
            image, masks = _resize(image, masks if with_masks else None, scale)
            h, w = image.shape[-2:]
            # where the item's top-left corner lands: its corner touches the centre
            x0 = xc - w if corner in (0, 2) else xc
            y0 = yc - h if corner in (0, 1) else yc
            # the part of the item inside the canvas
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + w, 2 * s), min(y0 + h, 2 * s)
            canvas[:, cy0:cy1, cx0:cx1] = image[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            b = boxes * torch.tensor([w / w0, h / h0, w / w0, h / h0]) + torch.tensor([x0, y0, x0, y0])
            out_boxes.append(b.clamp(0, 2 * s))
            out_labels.append(labels)
            out_crowd.append(iscrowd)
            if with_masks:
                m = torch.zeros((len(labels), 2 * s, 2 * s), dtype=masks.dtype)
                m[:, cy0:cy1, cx0:cx1] = masks[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
                out_masks.append(m)
        masks = torch.cat(out_masks) if with_masks else None
        return canvas, torch.cat(out_boxes), torch.cat(out_labels), masks, torch.cat(out_crowd)

    @staticmethod
    def _fit(item, height: int, width: int):
        """``item`` scaled to fit in ``height`` x ``width`` (kept aspect),
        padded at the bottom and right."""
        image, boxes, labels, masks, iscrowd = item
        h0, w0 = image.shape[-2:]
        scale = min(height / h0, width / w0)
        image, masks = _resize(image, masks, scale)
        h, w = image.shape[-2:]
        canvas = torch.full((3, height, width), FILL, dtype=image.dtype)
        canvas[:, :h, :w] = image[:, :height, :width]
        if masks is not None:
            padded = torch.zeros((masks.shape[0], height, width), dtype=masks.dtype)
            padded[:, :h, :w] = masks[:, :height, :width]
            masks = padded
        boxes = (boxes * torch.tensor([w / w0, h / h0, w / w0, h / h0])).clamp(min=0)
        boxes = torch.minimum(boxes, torch.tensor([width, height, width, height], dtype=boxes.dtype))
        return canvas, boxes, labels, masks, iscrowd

    def _mixup(self, a, b):
        image, boxes, labels, masks, iscrowd = a
        h, w = image.shape[-2:]
        b_image, b_boxes, b_labels, b_masks, b_crowd = self._fit(b, h, w)
        r = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
        mixed = (image.float() * r + b_image.float() * (1 - r)).round().clamp(0, 255).to(image.dtype)
        if masks is not None and b_masks is not None:
            masks = torch.cat([masks, b_masks])
        else:
            masks = None
        return mixed, torch.cat([boxes, b_boxes]), torch.cat([labels, b_labels]), masks, torch.cat([iscrowd, b_crowd])

    def _copy_paste(self, a, b):
        image, boxes, labels, masks, iscrowd = a
        if b[3] is None or len(b[2]) == 0:
            return a
        h, w = image.shape[-2:]
        b_image, _, b_labels, b_masks, b_crowd = self._fit(b, h, w)
        keep = torch.rand(len(b_labels)) < 0.5
        if not keep.any():
            keep[int(torch.randint(len(b_labels), (1,)))] = True
        b_masks, b_labels, b_crowd = b_masks[keep].bool(), b_labels[keep], b_crowd[keep]
        pasted = b_masks.any(0)
        image = torch.where(pasted, b_image, image)
        covered = masks.bool() & ~pasted
        # objects partly covered get the box of what is left of them; fully
        # covered ones are dropped
        left = covered.flatten(1).any(1)
        changed = (covered != masks.bool()).flatten(1).any(1)
        boxes = torch.where(changed[:, None], _boxes_of(covered), boxes)
        masks = torch.cat([covered[left], b_masks]).to(torch.uint8)
        boxes = torch.cat([boxes[left], _boxes_of(b_masks)])
        return image, boxes, torch.cat([labels[left], b_labels]), masks, torch.cat([iscrowd[left], b_crowd])


def epochs_of(max_epochs: int | None, max_iters: int, iters_per_epoch: int) -> int:
    """The run's epoch count (an iteration-based run rounds up)."""
    return max_epochs if max_epochs is not None else math.ceil(max_iters / max(iters_per_epoch, 1))
