"""``detcore coco make-shapes``: a deterministic synthetic COCO dataset.

Coloured rectangles, ellipses and triangles (one class each, each in its own
range of hues) on muted textured backgrounds, 1-4 non-overlapping objects per
image, with boxes and polygon segmentations. Small and easy on purpose: it is
the bundled demo's data and the tests' real COCO files.
"""

from __future__ import annotations

import colorsys
import json
import math
import os

import numpy as np

CATEGORIES = [
    {"id": 1, "name": "rectangle", "supercategory": "shape"},
    {"id": 2, "name": "ellipse", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
# (low, high) hue in degrees per class: red-orange, green, blue-violet.
_HUES = {1: (-15.0, 35.0), 2: (85.0, 150.0), 3: (205.0, 265.0)}
_SPLIT_CODE = {"train": 1, "val": 2}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image

    base = rng.uniform(70, 180)
    tint = rng.uniform(-12, 12, size=3)
    # Smooth blotches (upsampled coarse noise) plus fine grain.
    coarse = rng.uniform(-30, 30, size=(6, 6)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))
    grain = rng.normal(0, 6, size=(size, size))
    yy, xx = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, math.pi)
    stripes = 8 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * rng.uniform(0.15, 0.5))
    gray = base + smooth + grain + stripes
    img = gray[..., None] + tint[None, None, :]
    return np.clip(img, 0, 255)


def _colour(rng: np.random.Generator, cat_id: int) -> np.ndarray:
    lo, hi = _HUES[cat_id]
    hue = (rng.uniform(lo, hi) % 360.0) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    return np.array([r, g, b]) * 255.0


def _polygon(rng: np.random.Generator, cat_id: int, size: int) -> list[tuple[float, float]]:
    s = rng.uniform(0.2, 0.42) * size
    cx, cy = rng.uniform(0, size, size=2)
    if cat_id == 1:
        w, h = s * rng.uniform(0.7, 1.3), s * rng.uniform(0.7, 1.3)
        x, y = cx - w / 2, cy - h / 2
        return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    if cat_id == 2:
        rx, ry = s / 2 * rng.uniform(0.7, 1.3), s / 2 * rng.uniform(0.7, 1.3)
        return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 32, endpoint=False)]
    r = s * 0.6
    t0 = rng.uniform(0, 2 * math.pi)
    return [
        (cx + r * rng.uniform(0.85, 1.0) * math.cos(t0 + k * 2 * math.pi / 3 + rng.uniform(-0.2, 0.2)),
         cy + r * rng.uniform(0.85, 1.0) * math.sin(t0 + k * 2 * math.pi / 3 + rng.uniform(-0.2, 0.2)))
        for k in range(3)
    ]


def _box(poly) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    return min(xs), min(ys), max(xs), max(ys)


def _overlaps(a, b, margin: float = 2.0) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def make_image(seed: int, split: str, index: int, size: int):
    """One image (uint8 ``[size, size, 3]``) and its objects:
    ``[(cat_id, polygon, rle)]``; the same arguments give the same result."""
    from pycocotools import mask as mask_util

    rng = np.random.default_rng([seed, _SPLIT_CODE.get(split, 3), index])
    img = _background(rng, size)
    objects = []
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(1, 5))):
        cat_id = int(rng.integers(1, 4))
        for _try in range(30):
            poly = _polygon(rng, cat_id, size)
            box = _box(poly)
            inside = box[0] >= 1 and box[1] >= 1 and box[2] <= size - 1 and box[3] <= size - 1
            if inside and not any(_overlaps(box, b) for b in boxes):
                break
        else:
            continue
        flat = [round(v, 2) for p in poly for v in p]
        rle = mask_util.frPyObjects([flat], size, size)[0]
        mask = mask_util.decode(rle).astype(bool)
        if mask.sum() < 16:
            continue
        colour = _colour(rng, cat_id)
        shade = 1.0 + rng.normal(0, 0.04, size=(size, size, 1))
        img = np.where(mask[..., None], np.clip(colour[None, None, :] * shade, 0, 255), img)
        boxes.append(box)
        objects.append((cat_id, flat, rle))
    return img.astype(np.uint8), objects


def make_split(root: str, split: str, count: int, size: int, seed: int) -> dict:
    """Write ``root/split/*.jpg`` and return the split's COCO dict."""
    from PIL import Image
    from pycocotools import mask as mask_util

    img_dir = os.path.join(root, split)
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img, objects = make_image(seed, split, i, size)
        name = f"{i:06d}.jpg"
        Image.fromarray(img).save(os.path.join(img_dir, name), quality=92)
        image_id = i + 1
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for cat_id, flat, rle in objects:
            xs, ys = flat[0::2], flat[1::2]
            x1, y1 = min(xs), min(ys)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_id,
                    "bbox": [x1, y1, round(max(xs) - x1, 2), round(max(ys) - y1, 2)],
                    "area": float(mask_util.area(rle)),
                    "segmentation": [flat],
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": f"detcore synthetic shapes, {split} split (seed {seed})"},
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }


def make_shapes(root: str, train: int = 500, val: int = 100, size: int = 128, seed: int = 0) -> dict[str, dict]:
    """Write ``root/{train,val}.json`` and ``root/{train,val}/``; return the COCO dicts."""
    out = {}
    for split, count in (("train", train), ("val", val)):
        if count <= 0:
            continue
        data = make_split(root, split, count, size, seed)
        with open(os.path.join(root, f"{split}.json"), "w") as f:
            json.dump(data, f)
        out[split] = data
    return out
