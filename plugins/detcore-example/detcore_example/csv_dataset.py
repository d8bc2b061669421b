"""The ``csv_boxes`` dataset: items in detcore's dataset format."""

from __future__ import annotations

import os

import torch
from torchvision import tv_tensors

from detcore import build_pipeline, read_image
from detcore_example.csv_format import read_csv_boxes


class CsvBoxesDataset(torch.utils.data.Dataset):
    def __init__(self, csv_file: str, img_dir: str, classes=None, transforms=()):
        self.table = read_csv_boxes(csv_file)
        self.img_dir = img_dir
        self.class_names = list(classes) if classes is not None else self.table.class_names
        self._index = {n: i for i, n in enumerate(self.class_names)}
        self.images = self.table.images
        self.pipeline = build_pipeline(list(transforms))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int):
        name = self.images[idx]
        image = read_image(os.path.join(self.img_dir, name))
        h, w = image.shape[-2:]
        rows = [r for r in self.table.boxes[name] if r[4] in self._index]
        boxes = torch.tensor([r[:4] for r in rows], dtype=torch.float32).reshape(-1, 4)
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([self._index[r[4]] for r in rows], dtype=torch.int64),
            "image_id": idx,
            "orig_size": (int(h), int(w)),
        }
        return self.pipeline(tv_tensors.Image(image), target)
