"""Helpers for tests that need small COCO files on disk (detcore's and plugins')."""

from __future__ import annotations

import json
import os

import numpy as np


def write_image(path: str, width: int, height: int, colour=(90, 120, 150), *, exif_orientation: int | None = None) -> None:
    """A solid-colour image with a white top-left corner square (so that
    orientation can be checked); the format follows the extension."""
    from PIL import Image

    arr = np.empty((height, width, 3), dtype=np.uint8)
    arr[:] = colour
    arr[: max(1, height // 4), : max(1, width // 4)] = 255
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    im = Image.fromarray(arr)
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(path, exif=exif, quality=95)
    else:
        im.save(path)


def write_coco(path: str, images: list[dict], annotations: list[dict], categories: list[dict]) -> str:
    """Write a COCO file; ``images`` need id/file_name/width/height, annotation
    ids, ``area`` and ``iscrowd`` are filled in when missing."""
    anns = []
    for i, a in enumerate(annotations, start=1):
        a = dict(a)
        a.setdefault("id", i)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
        anns.append(a)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": categories}, f, indent=1)
    return path
