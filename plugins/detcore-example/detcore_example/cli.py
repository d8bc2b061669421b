"""``detcore example-csv``: summarise a CSV box file, or write a tiny demo
set (drawn shapes) to try the plugin without any data."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    stats = sub.add_parser("stats", help="images, boxes and boxes per label of a CSV file")
    stats.add_argument("csv_file")
    demo = sub.add_parser("make-demo", help="write a tiny CSV box set of drawn squares and discs")
    demo.add_argument("out_dir")
    demo.add_argument("--images", type=int, default=8)
    demo.add_argument("--size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    if args.action == "stats":
        from detcore_example.csv_format import read_csv_boxes

        table = read_csv_boxes(args.csv_file)
        n_boxes = sum(len(v) for v in table.boxes.values())
        print(f"{args.csv_file}: {len(table.images)} images, {n_boxes} boxes")
        for name in table.class_names:
            count = sum(1 for rows in table.boxes.values() for r in rows if r[4] == name)
            print(f"  {name}: {count}")
        return 0
    return make_demo(Path(args.out_dir), args.images, args.size, args.seed)


def make_demo(out: Path, images: int, size: int, seed: int) -> int:
    import random
    import warnings

    import torch

    # torchvision 0.29 deprecates its image codecs in favour of TorchCodec;
    # they work, and the warning would repeat for every image.
    warnings.filterwarnings("ignore", message="The image decoding and encoding", category=DeprecationWarning)
    from torchvision.io import write_png

    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = ["image,x1,y1,x2,y2,label"]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(images):
        img = torch.full((3, size, size), 30, dtype=torch.uint8)
        name = f"img{i:03d}.png"
        for _ in range(rng.randint(1, 3)):
            s = rng.randint(size // 6, size // 3)
            x, y = rng.randint(0, size - s - 1), rng.randint(0, size - s - 1)
            label = rng.choice(["square", "disc"])
            if label == "square":
                mask = (xx >= x) & (xx < x + s) & (yy >= y) & (yy < y + s)
            else:
                r = s / 2
                mask = (xx + 0.5 - x - r) ** 2 + (yy + 0.5 - y - r) ** 2 <= r * r
            img[:, mask] = torch.tensor([220, 80, 40] if label == "square" else [40, 200, 90], dtype=torch.uint8)[:, None]
            rows.append(f"{name},{x},{y},{x + s},{y + s},{label}")
        write_png(img, str(out / "images" / name))
    (out / "boxes.csv").write_text("\n".join(rows) + "\n")
    print(f"wrote {images} images and {len(rows) - 1} boxes to {out}")
    return 0
