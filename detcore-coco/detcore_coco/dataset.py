"""The ``coco`` dataset: COCO-format annotations read with pycocotools."""

from __future__ import annotations

import contextlib
import io
import logging
import os

import numpy as np
import torch
from torchvision import tv_tensors

from detcore import ImageReadError, build_pipeline, image_size, read_image
from detcore.errors import ConfigCheckError
from detcore_coco.annfile import (
    AnnotationError,
    ClassNameError,
    annotated_image_count,
    category_ids_for,
    load_coco_json,
)

logger = logging.getLogger("detcore.data")


def make_coco(data: dict):
    """A pycocotools ``COCO`` over already parsed data (no second read, no prints)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoDataset(torch.utils.data.Dataset):
    """Items ``(image, target)`` as the dataset contract describes (see
    :func:`detcore.hookspecs.detcore_datasets`).

    * labels are contiguous and 0-based: label ``i`` is ``class_names[i]``,
      COCO category id ``cat_ids[i]``; ``classes`` picks (and orders) a subset
      of the file's categories, and annotations of other categories are left out;
    * ``iscrowd`` annotations stay in the target as ignore regions
      (``target["iscrowd"] == 1``) unless ``keep_crowd = false``;
    * boxes narrower or shorter than one pixel, or outside the image, are
      dropped (as MMDetection does); ``filter_empty`` drops images without a
      (non-crowd) object and ``min_size`` images whose shorter side is smaller;
    * ``with_masks`` adds ``masks`` from polygons or RLE (boxes without a
      segmentation get a filled box);
    * ``aspect_ratios`` come from the file's width/height, without decoding;
    * an image far larger than its transforms keep (over
      4 times) is decoded at reduced size if it is a JPEG (boxes and masks
      scaled with it; ``orig_size`` stays the file's, so evaluation is
      unchanged) and otherwise warned about once, naming the file (see
      :func:`detcore.read_image`).
    """

    def __init__(
        self,
        ann_file: str,
        img_dir: str,
        *,
        classes: list[str] | None = None,
        transforms=(),
        filter_empty: bool = False,
        min_size: int = 0,
        with_masks: bool = False,
        keep_crowd: bool = True,
        skip_bad_images: bool = False,
    ):
        self.ann_file = ann_file
        self.img_dir = img_dir
        self.with_masks = with_masks
        self.skip_bad_images = skip_bad_images
        self.skipped_images = 0
        try:
            data = load_coco_json(ann_file)
        except AnnotationError as exc:
            raise ConfigCheckError(str(exc), key="ann_file") from None
        try:
            self.cat_ids, self.class_names = category_ids_for(data, classes, ann_file)
        except ClassNameError as exc:
            raise ConfigCheckError(str(exc), key="classes") from None
        if annotated_image_count(data, self.cat_ids) == 0:
            raise ConfigCheckError(
                f"none of the {len(data['images'])} images of '{ann_file}' has an annotation of the "
                f"classes {self.class_names}; training would see no objects",
                key="ann_file",
            )
        self.coco = make_coco(data)
        label_of = {cid: i for i, cid in enumerate(self.cat_ids)}

        records = []
        missing = []
        for img in sorted(data["images"], key=lambda r: r["id"]):
            h, w = int(img["height"]), int(img["width"])
            if min(h, w) < min_size:
                continue
            boxes, labels, crowd, ann_ids = [], [], [], []
            for ann in self.coco.imgToAnns.get(img["id"], []):
                label = label_of.get(ann["category_id"])
                is_crowd = int(ann.get("iscrowd", 0))
                if label is None or (is_crowd and not keep_crowd) or ann.get("ignore", 0):
                    continue
                x, y, bw, bh = ann["bbox"]
                x1, y1 = max(float(x), 0.0), max(float(y), 0.0)
                x2, y2 = min(float(x + bw), float(w)), min(float(y + bh), float(h))
                if x2 - x1 < 1 or y2 - y1 < 1:
                    continue
                boxes.append((x1, y1, x2, y2))
                labels.append(label)
                crowd.append(is_crowd)
                ann_ids.append(ann.get("id"))
            if filter_empty and not any(c == 0 for c in crowd):
                continue
            path = os.path.join(img_dir, img["file_name"])
            if not os.path.exists(path):
                missing.append((img, path))
                if skip_bad_images:
                    continue
            records.append(
                {
                    "id": img["id"],
                    "file_name": img["file_name"],
                    "height": h,
                    "width": w,
                    "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                    "labels": np.asarray(labels, dtype=np.int64),
                    "iscrowd": np.asarray(crowd, dtype=np.int64),
                    "ann_ids": ann_ids,
                }
            )
        if missing and not skip_bad_images:
            shown = "; ".join(f"'{p}' (image id {img['id']})" for img, p in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ImageReadError(
                f"{len(missing)} image file(s) listed in '{ann_file}' are missing under img_dir "
                f"'{img_dir}': {shown}{more}. Fix img_dir, or set skip_bad_images = true to train "
                f"without them."
            )
        if missing:
            logger.warning(
                "coco dataset '%s': skipped %d image(s) whose file is missing under '%s' (first: '%s')",
                ann_file, len(missing), img_dir, missing[0][1],
            )
            self.skipped_images = len(missing)
        if not records:
            raise ConfigCheckError(
                f"no image of '{ann_file}' is left after filtering (filter_empty = {str(filter_empty).lower()}, "
                f"min_size = {min_size}, skip_bad_images = {str(skip_bad_images).lower()})",
                key="ann_file",
            )
        self.records = records
        self.img_ids = [r["id"] for r in records]
        self.aspect_ratios = [r["width"] / r["height"] for r in records]
        self.transforms = build_pipeline(transforms)

    def __len__(self) -> int:
        return len(self.records)

    def labels_of(self, idx: int) -> set[int]:
        """Labels of the (non-crowd) objects in item ``idx``, without loading it."""
        r = self.records[idx]
        return {int(label) for label, c in zip(r["labels"], r["iscrowd"]) if not c}

    def _load(self, idx: int):
        r = self.records[idx]
        path = os.path.join(self.img_dir, r["file_name"])
        # Only what the transforms keep: a far larger JPEG decodes at reduced size.
        min_scale = self.transforms.min_scale(r["height"], r["width"])
        try:
            image = read_image(path, min_scale=min_scale)
            h, w = image.shape[-2:]
            if (h, w) != (r["height"], r["width"]) and h < r["height"] and w < r["width"]:
                h, w = image_size(path)  # reduced, or a smaller file: the header says which
        except ImageReadError as exc:
            raise ImageReadError(f"{exc} (image id {r['id']} of '{self.ann_file}')") from None
        if (h, w) != (r["height"], r["width"]):
            raise ImageReadError(
                f"image '{path}' (image id {r['id']} of '{self.ann_file}') is {w}x{h} pixels but "
                f"the annotation file says {r['width']}x{r['height']}; its boxes would not line up. "
                f"Run 'detcore coco check {self.ann_file} {self.img_dir}'."
            )
        return image

    def __getitem__(self, idx: int):
        image = None
        for _attempt in range(len(self)):
            try:
                image = self._load(idx)
                break
            except ImageReadError as exc:
                if not self.skip_bad_images:
                    raise
                self.skipped_images += 1
                logger.warning("%s; skipped (%d bad image(s) so far in this process)", exc, self.skipped_images)
                idx = (idx + 1) % len(self)
        if image is None:  # pragma: no cover - every image is bad
            raise ImageReadError(f"no image of '{self.ann_file}' could be read")
        r = self.records[idx]
        h, w = r["height"], r["width"]
        boxes = torch.from_numpy(r["boxes"].copy())
        ih, iw = image.shape[-2:]
        if (ih, iw) != (h, w):  # decoded at reduced size; orig_size stays the file's
            boxes *= torch.tensor([iw / w, ih / h, iw / w, ih / h])
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(ih, iw)),
            "labels": torch.from_numpy(r["labels"].copy()),
            "iscrowd": torch.from_numpy(r["iscrowd"].copy()),
            "image_id": r["id"],
            "orig_size": (h, w),
        }
        if self.with_masks:
            masks = tv_tensors.Mask(self._masks(r))
            if (ih, iw) != (h, w):
                from torchvision.transforms.v2 import functional as F

                masks = F.resize(masks, [ih, iw])  # nearest for masks
            target["masks"] = masks
        return self.transforms(tv_tensors.Image(image), target)

    def _masks(self, r: dict) -> torch.Tensor:
        h, w = r["height"], r["width"]
        out = np.zeros((len(r["ann_ids"]), h, w), dtype=np.uint8)
        for k, ann_id in enumerate(r["ann_ids"]):
            ann = self.coco.anns.get(ann_id) if ann_id is not None else None
            if ann is not None and ann.get("segmentation"):
                out[k] = self.coco.annToMask(ann)
            else:
                x1, y1, x2, y2 = r["boxes"][k]
                out[k, int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = 1
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"CocoDataset('{self.ann_file}', {len(self)} images, {len(self.class_names)} classes)"
