"""The Pascal VOC dataset: ``ImageSets/Main/<split>.txt``, ``Annotations/*.xml``
and ``JPEGImages/``, read natively."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from detcore import build_pipeline, read_image
from detcore_voc.annotations import VocFormatError, default_classes, read_split


class VocDataset(torch.utils.data.Dataset):
    """Items ``(image, target)`` in detcore's format; ``image_id`` is the
    index in the split. Difficult objects are left out of training targets
    unless ``keep_difficult``; the ``voc`` metric still sees them (ignored)."""

    def __init__(
        self,
        root: str,
        split: str = "trainval",
        classes: list[str] | None = None,
        transforms=(),
        keep_difficult: bool = False,
        filter_empty: bool = False,
        img_dir: str = "JPEGImages",
    ):
        self.root = Path(root)
        self.img_dir = self.root / img_dir
        self.class_names = list(classes) if classes is not None else default_classes(root)
        index = {n: i for i, n in enumerate(self.class_names)}
        records = read_split(root, split)
        unknown = sorted({o.name for r in records for o in r.objects} - set(index))
        if unknown and classes is None:
            raise VocFormatError(f"{root}: split '{split}' has classes {unknown} not in {self.class_names}")
        self.keep_difficult = keep_difficult
        if filter_empty:
            records = [r for r in records if any(o.name in index and (keep_difficult or not o.difficult) for o in r.objects)]
        self.records = records
        self._index = index
        degenerate = sum(r.degenerate for r in records)
        if degenerate:
            warnings.warn(
                f"VOC {root} split '{split}': dropped {degenerate} box(es) with no area", stacklevel=2
            )
        self.pipeline = build_pipeline(list(transforms))
        self.aspect_ratios = [r.width / r.height for r in records]

    def __len__(self) -> int:
        return len(self.records)

    def _objects(self, record, training: bool):
        objs = [o for o in record.objects if o.name in self._index]
        if training and not self.keep_difficult:
            objs = [o for o in objs if not o.difficult]
        return objs

    def __getitem__(self, idx: int):
        record = self.records[idx]
        image = read_image(self.img_dir / record.filename)
        h, w = int(image.shape[-2]), int(image.shape[-1])
        objs = self._objects(record, training=True)
        boxes = torch.tensor([o.box for o in objs], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([self._index[o.name] for o in objs], dtype=torch.int64),
            "image_id": idx,
            "orig_size": (h, w),
        }
        return self.pipeline(tv_tensors.Image(image), target)

    def voc_ground_truth(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """image_id -> (boxes, labels, difficult) from the XML, difficult
        objects included, for the ``voc`` metric."""
        out = {}
        for idx, record in enumerate(self.records):
            objs = self._objects(record, training=False)
            out[idx] = (
                np.array([o.box for o in objs], dtype=np.float64).reshape(-1, 4),
                np.array([self._index[o.name] for o in objs], dtype=np.int64),
                np.array([o.difficult and not self.keep_difficult for o in objs], dtype=bool),
            )
        return out

    def __repr__(self) -> str:
        return f"VocDataset({str(self.root)!r}, {len(self)} images, classes={self.class_names})"
