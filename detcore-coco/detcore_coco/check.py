"""``detcore coco check``: every problem of a COCO file and its images, counted."""

from __future__ import annotations

import os
from collections import Counter, defaultdict

from detcore import ImageReadError, image_size
from detcore.errors import shorten

# problem kind -> what it means, in the order reported
KINDS = {
    "invalid_record": "record without its required fields",
    "duplicate_image_id": "duplicate image id",
    "duplicate_annotation_id": "duplicate annotation id",
    "duplicate_category_id": "duplicate category id",
    "duplicate_category_name": "duplicate category name",
    "bad_image_size": "image width/height not a positive number of pixels",
    "missing_image": "image file missing",
    "unreadable_image": "image file unreadable",
    "size_mismatch": "image size differs from the file's width/height",
    "unknown_image": "annotation of an image id not in 'images'",
    "unknown_category": "annotation of a category id not in 'categories'",
    "malformed_bbox": "bbox is not [x, y, w, h] of finite numbers",
    "zero_area_box": "box with zero (or negative) width or height",
    "box_outside_image": "box reaching outside its image",
}

# Findings that do not make the file unusable: reported, exit status 0.
WARNINGS = {
    "empty_category": "category without any annotation (a class the model would learn never to predict)",
    "large_image": "image far larger than the training input size (decoding it costs memory and time)",
}

# An image whose longer side is more than this many times the input size is
# "far larger": the same factor past which detcore's ``read_image`` decodes a
# JPEG at reduced size and warns about other formats.
LARGE_FACTOR = 4


class CheckResult:
    def __init__(self):
        self.problems: dict[str, list[str]] = defaultdict(list)
        self.warnings: dict[str, list[str]] = defaultdict(list)
        self.counts: dict[str, int] = {}

    def add(self, kind: str, message: str) -> None:
        (self.warnings if kind in WARNINGS else self.problems)[kind].append(message)

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def lines(self, examples: int = 5) -> list[str]:
        out = []
        for kind, what in {**KINDS, **WARNINGS}.items():
            found = self.problems.get(kind) or self.warnings.get(kind, [])
            if not found:
                continue
            out.append(f"{'warning: ' if kind in WARNINGS else ''}{kind}: {len(found)} ({what})")
            out += [f"  {m}" for m in found[:examples]]
            if len(found) > examples:
                out.append(f"  ... and {len(found) - examples} more")
        return out


def check_coco(
    ann_file: str,
    img_dir: str,
    *,
    decode: bool = True,
    tolerance: float = 0.5,
    input_size: int = 1333,
) -> CheckResult:
    """Check ``ann_file`` against the images in ``img_dir``. Invalid JSON
    (or a missing or non-UTF-8 file) raises
    :class:`detcore_coco.annfile.AnnotationError`; everything else is
    collected. ``tolerance`` (pixels) is how far a box may reach past the image
    border before it counts as outside (rounding in converters). Images whose
    longer side is over ``LARGE_FACTOR`` times ``input_size`` (the longer
    side a run trains at) are warnings."""
    from detcore_coco.annfile import (
        AnnotationError,
        bad_image_size,
        classes_setting,
        empty_categories,
        is_bbox,
        read_json,
    )

    res = CheckResult()
    data = read_json(ann_file, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("categories"), list):
        raise AnnotationError(f"'{ann_file}' is not a COCO detection file: it needs 'images' and 'categories' lists")
    if not os.path.isdir(img_dir):
        raise AnnotationError(f"image directory not found: '{img_dir}'")

    images: dict = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or any(k not in img for k in ("id", "file_name", "width", "height")):
            res.add("invalid_record", f"images[{i}] lacks id/file_name/width/height: {shorten(img)}")
            continue
        if img["id"] in images:
            res.add("duplicate_image_id", f"images[{i}]: id {img['id']} ('{img['file_name']}') already used by '{images[img['id']]['file_name']}'")
            continue
        images[img["id"]] = img
        bad = bad_image_size(img)
        if bad:
            res.add("bad_image_size", f"images[{i}] (image id {img['id']}, '{img['file_name']}'): {bad}")
        path = os.path.join(img_dir, img["file_name"])
        if not os.path.exists(path):
            res.add("missing_image", f"image id {img['id']}: '{path}'")
            continue
        try:
            h, w = image_size(path, decode=decode)
        except ImageReadError as exc:
            res.add("unreadable_image", f"image id {img['id']}: {exc}")
            continue
        if max(h, w) > LARGE_FACTOR * input_size:
            res.add(
                "large_image",
                f"image id {img['id']} '{path}': {w}x{h}, over {LARGE_FACTOR}x the input size {input_size}; "
                f"shrink the file (e.g. to {input_size * 2} pixels on its longer side and scale its boxes)",
            )
        if not bad and (h, w) != (img["height"], img["width"]):
            res.add("size_mismatch", f"image id {img['id']} '{img['file_name']}': file is {w}x{h}, JSON says {img['width']}x{img['height']}")

    cats: dict = {}
    names: Counter = Counter()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            res.add("invalid_record", f"categories[{i}] lacks id/name: {shorten(cat)}")
            continue
        if cat["id"] in cats:
            res.add("duplicate_category_id", f"categories[{i}]: id {cat['id']} ('{cat['name']}')")
            continue
        cats[cat["id"]] = cat
        names[cat["name"]] += 1
    for name, n in names.items():
        if n > 1:
            res.add("duplicate_category_name", f"'{name}' names {n} categories")

    ann_ids: set = set()
    anns = data.get("annotations", [])
    for i, ann in enumerate(anns if isinstance(anns, list) else []):
        if not isinstance(ann, dict) or any(k not in ann for k in ("id", "image_id", "category_id", "bbox")):
            res.add("invalid_record", f"annotations[{i}] lacks id/image_id/category_id/bbox: {shorten(ann)}")
            continue
        label = f"annotation id {ann['id']}"
        if ann["id"] in ann_ids:
            res.add("duplicate_annotation_id", f"annotations[{i}]: id {ann['id']}")
        ann_ids.add(ann["id"])
        img = images.get(ann["image_id"])
        if img is None:
            res.add("unknown_image", f"{label}: image_id {ann['image_id']}")
        if ann["category_id"] not in cats:
            res.add("unknown_category", f"{label}: category_id {ann['category_id']}")
        bbox = ann["bbox"]
        if not is_bbox(bbox):
            res.add("malformed_bbox", f"{label}: {shorten(repr(bbox))}")
            continue
        x, y, w, h = bbox
        where = f"{label} (image '{img['file_name']}')" if img else label
        if w <= 0 or h <= 0:
            res.add("zero_area_box", f"{where}: bbox {bbox}")
            continue
        if img is not None and not bad_image_size(img) and (x < -tolerance or y < -tolerance or x + w > img["width"] + tolerance or y + h > img["height"] + tolerance):
            res.add("box_outside_image", f"{where}: bbox {bbox} in a {img['width']}x{img['height']} image")
    if isinstance(anns, list):
        empty, annotated = empty_categories({"categories": list(cats.values()), "annotations": anns})
        for cat in empty if annotated else []:
            res.add("empty_category", f"category id {cat['id']} '{cat['name']}': no annotations; leave it "
                                      f"out with {classes_setting(annotated)} in the dataset table")
    res.counts = {"images": len(data["images"]), "annotations": len(anns) if isinstance(anns, list) else 0, "categories": len(data["categories"])}
    return res
