"""An in-memory dataset of generated images: coloured boxes on a noisy grey
background. Every item is a pure function of ``(seed, index)``, so it needs
no files and is the same in every process: for tests, benchmarks and
:mod:`detcore.testing`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["SyntheticDataset", "DEFAULT_PALETTE"]

DEFAULT_PALETTE = [
    (220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 225, 25), (145, 30, 180),
    (245, 130, 48), (70, 240, 240), (240, 50, 230), (128, 128, 0), (0, 0, 128),
]


class SyntheticDataset(torch.utils.data.Dataset):
    """``num_images`` images of ``image_size`` (``[h, w]``; with
    ``vary_aspect`` every other image is ``[w, h]``), each with 1 to
    ``max_objects`` filled rectangles whose colour is their class's.

    Follows the dataset contract of :func:`detcore.hookspecs.detcore_datasets`:
    ``class_names``, ``aspect_ratios``, ``palette``, ``labels_of`` and items
    ``(tv_tensors.Image uint8, target)``. It also has ``cat_ids`` (1..C),
    ``img_ids`` and, built on first use with pycocotools, ``coco``: the
    ground truth as a COCO object, so the ``coco`` metric evaluates it.
    """

    def __init__(
        self,
        num_images: int = 16,
        image_size: Sequence[int] = (64, 64),
        num_classes: int = 3,
        *,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        max_objects: int = 3,
        vary_aspect: bool = False,
        seed: int = 0,
        transforms=None,
    ):
        if classes is not None:
            num_classes = len(classes)
        self.num_images = int(num_images)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.class_names = list(classes) if classes is not None else [f"class{i}" for i in range(num_classes)]
        base = palette or DEFAULT_PALETTE
        self.palette = [tuple(int(c) for c in base[i % len(base)]) for i in range(num_classes)]
        self.max_objects = int(max_objects)
        self.vary_aspect = vary_aspect
        self.seed = int(seed)
        self.transforms = transforms
        self.aspect_ratios = [w / h for h, w in (self.size_of(i) for i in range(self.num_images))]
        self.cat_ids = list(range(1, len(self.class_names) + 1))
        self.img_ids = list(range(self.num_images))
        self._coco = None

    def __len__(self) -> int:
        return self.num_images

    def size_of(self, idx: int) -> tuple[int, int]:
        h, w = self.image_size
        return (w, h) if self.vary_aspect and idx % 2 else (h, w)

    def _generator(self, idx: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + idx)
        return g

    def annotations(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(boxes xyxy float [K, 4], labels int64 [K])`` of item ``idx``."""
        h, w = self.size_of(idx)
        g = self._generator(idx)
        k = int(torch.randint(1, self.max_objects + 1, (1,), generator=g))
        labels = torch.randint(0, len(self.class_names), (k,), generator=g)
        # Boxes between a quarter and a half of the image side.
        bw = (torch.rand(k, generator=g) * 0.25 + 0.25) * w
        bh = (torch.rand(k, generator=g) * 0.25 + 0.25) * h
        x0 = torch.rand(k, generator=g) * (w - bw)
        y0 = torch.rand(k, generator=g) * (h - bh)
        boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1).round()
        return boxes, labels

    def coco_dict(self) -> dict:
        """The annotations in COCO format (boxes in original pixels)."""
        images, anns = [], []
        for idx in range(self.num_images):
            h, w = self.size_of(idx)
            images.append({"id": idx, "width": w, "height": h, "file_name": f"{idx:06d}.png"})
            boxes, labels = self.annotations(idx)
            for (x0, y0, x1, y1), lab in zip(boxes.tolist(), labels.tolist()):
                anns.append({
                    "id": len(anns) + 1, "image_id": idx, "category_id": self.cat_ids[lab],
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                })
        cats = [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.class_names)]
        return {"images": images, "annotations": anns, "categories": cats}

    @property
    def coco(self):
        """A ``pycocotools.coco.COCO`` of :meth:`coco_dict` (pycocotools is
        imported here, only when a COCO metric asks)."""
        if self._coco is None:
            import contextlib
            import io

            from pycocotools.coco import COCO

            coco = COCO()
            coco.dataset = self.coco_dict()
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            self._coco = coco
        return self._coco

    def labels_of(self, idx: int) -> set[int]:
        return {int(v) for v in self.annotations(idx)[1].tolist()}

    def __getitem__(self, idx: int):
        from torchvision import tv_tensors

        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        h, w = self.size_of(idx)
        boxes, labels = self.annotations(idx)
        g = self._generator(idx + 7_919 * (self.num_images + 1))
        image = (torch.full((3, h, w), 110.0) + torch.randn(3, h, w, generator=g) * 12).clamp_(0, 255)
        for (x0, y0, x1, y1), lab in zip(boxes.int().tolist(), labels.tolist()):
            image[:, y0:y1, x0:x1] = torch.tensor(self.palette[lab], dtype=torch.float32)[:, None, None]
        image = tv_tensors.Image(image.to(torch.uint8))
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": labels.to(torch.int64),
            "image_id": idx,
            "orig_size": (h, w),
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def __repr__(self) -> str:
        h, w = self.image_size
        return f"SyntheticDataset({self.num_images} images, {h}x{w}, {len(self.class_names)} classes)"
