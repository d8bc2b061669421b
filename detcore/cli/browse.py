"""``detcore browse-dataset RUN.toml --split train --out-dir DIR -n 20``:
dataset images after the configured transforms, with their ground-truth boxes
(and masks) drawn, to check a pipeline by eye."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detcore.cli.config import add_runfile_args, load_from_args
from detcore.errors import DetcoreError


def configure(parser: argparse.ArgumentParser) -> None:
    add_runfile_args(parser)
    parser.add_argument("--split", choices=["train", "val", "test"], default="train", help="dataset split (default: train)")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="where to write the drawn images")
    parser.add_argument("-n", "--num", type=int, default=20, metavar="N", help="number of images (default 20; 0: all)")
    parser.add_argument("--shuffle", action="store_true", help="pick images at random instead of the first N")
    parser.add_argument("--seed", type=int, default=0, help="seed for --shuffle and random transforms (default 0)")
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg", help="image format (default jpg)")


def run(args) -> int:
    import random

    import torch

    from detcore.engine.inference import build_dataset
    from detcore.visualize import draw_detections, image_to_uint8, save_image

    loaded = load_from_args(args)
    split, dataset = build_dataset(loaded, args.split)
    n_items = len(dataset)
    if n_items == 0:
        raise DetcoreError(f"data.{split} of {loaded.path} is empty")
    indices = list(range(n_items))
    if args.shuffle:
        random.Random(args.seed).shuffle(indices)
    if args.num > 0:
        indices = indices[: args.num]
    # Random transforms (flips, crops) are seeded so the images can be reproduced.
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    class_names = list(getattr(dataset, "class_names", []) or [])
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    boxes_total = 0
    for idx in indices:
        try:
            image, target = dataset[idx]
        except DetcoreError as exc:
            failed += 1
            print(f"detcore browse-dataset: item {idx} skipped: {exc}", file=sys.stderr)
            continue
        img = image_to_uint8(image)
        boxes = target["boxes"].as_subclass(torch.Tensor)
        labels = target["labels"]
        masks = target.get("masks")
        drawn = draw_detections(
            img, boxes, labels, None, class_names,
            masks=None if masks is None else masks.as_subclass(torch.Tensor),
        )
        crowd = target.get("iscrowd")
        if crowd is not None and bool(crowd.any()):
            # Crowd boxes are ignore regions: drawn in grey, no label.
            keep = crowd.bool()
            drawn = draw_detections(drawn, boxes[keep], labels[keep] * 0, None, ["crowd"], palette=[(128, 128, 128)])
        boxes_total += len(boxes)
        image_id = target.get("image_id", idx)
        image_id = int(image_id) if not isinstance(image_id, str) else image_id
        save_image(drawn, out_dir / f"{idx:05d}_{image_id}.{args.format}")
    written = len(indices) - failed
    print(
        f"wrote {written} image(s) of data.{split} ({n_items} items, {boxes_total} ground-truth boxes "
        f"drawn) to {out_dir}"
    )
    return 1 if failed else 0
