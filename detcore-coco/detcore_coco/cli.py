"""``detcore coco convert|check|make-shapes``."""

from __future__ import annotations

import argparse
import os


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be 1 or more, got 0")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="coco_command", metavar="ACTION", required=True)

    conv = sub.add_parser(
        "convert",
        help="convert VIA, Pascal VOC or YOLO annotations to a COCO file",
        description="Convert annotations to COCO. Zero-area boxes are dropped and listed.",
    )
    conv.add_argument("format", choices=["via", "voc", "yolo"], help="source format")
    conv.add_argument("src", metavar="SRC", help="via: the VIA JSON; voc: the directory of XML files; yolo: the directory of .txt labels")
    conv.add_argument("--images", required=True, metavar="IMG_DIR", help="directory of the images (file names in the output are relative to it)")
    conv.add_argument("--out", required=True, metavar="OUT.json", help="COCO file to write")
    conv.add_argument("--names", metavar="FILE", help="class names, .txt (one per line) or .yaml (YOLO 'names:'); required for yolo, fixes the category order for voc/via")
    conv.add_argument("--ids", metavar="FILE", help="voc: only the image ids listed in FILE (e.g. ImageSets/Main/train.txt)")
    conv.add_argument("--category", metavar="NAME", help="via: category of every region (default: the region's only attribute, else 'object')")
    conv.add_argument("--attribute", metavar="KEY", help="via: region attribute that holds the category name")

    chk = sub.add_parser(
        "check",
        help="report every problem of a COCO file and its images (exit 1 if any)",
        description="Check a COCO file against its images: missing or unreadable images, size "
        "mismatches, boxes outside the image, zero-area boxes, unknown categories and images, "
        "duplicate ids, and (warnings) images far larger than the training input size. Exit status 1 "
        "if any problem is found.",
    )
    chk.add_argument("ann_file", metavar="ANN.json")
    chk.add_argument("img_dir", metavar="IMG_DIR")
    chk.add_argument("--no-decode", action="store_true", help="read image headers only (faster; misses truncated files)")
    chk.add_argument("--examples", type=_non_negative_int, default=5, metavar="N", help="problems shown per kind (default 5)")
    chk.add_argument(
        "--input-size",
        type=_positive_int,
        default=1333,
        metavar="PIXELS",
        help="longer image side the run trains at (default 1333); images over 4x larger are warned about",
    )

    shp = sub.add_parser(
        "make-shapes",
        help="write the synthetic shapes dataset (COCO) used by the demo",
        description="Write DIR/train.json, DIR/train/, DIR/val.json, DIR/val/: coloured rectangles, "
        "ellipses and triangles (3 classes, boxes and polygons) on textured backgrounds. "
        "Deterministic for a given seed.",
    )
    shp.add_argument("dir", metavar="DIR")
    shp.add_argument("--train", type=int, default=500, metavar="N", help="training images (default 500)")
    shp.add_argument("--val", type=int, default=100, metavar="M", help="validation images (default 100)")
    shp.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    shp.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    return {"convert": _convert, "check": _check, "make-shapes": _make_shapes}[args.coco_command](args)


def _convert(args) -> int:
    from detcore_coco import convert

    names = convert.read_names(args.names) if args.names else None
    if args.format == "via":
        data, report = convert.via_to_coco(args.src, args.images, category=args.category, attribute=args.attribute, names=names)
    elif args.format == "voc":
        data, report = convert.voc_to_coco(args.src, args.images, names=names, ids_file=args.ids)
    else:
        if names is None:
            raise convert.ConvertError("yolo: give the class names with --names FILE (.txt or .yaml)")
        data, report = convert.yolo_to_coco(args.src, args.images, names=names)
    convert.write_coco(data, args.out)
    print(f"wrote {args.out}: " + "\n".join(report.lines()))
    print(f"categories: {', '.join(c['name'] for c in data['categories'])}")
    return 0


def _check(args) -> int:
    from detcore_coco.check import check_coco

    res = check_coco(args.ann_file, args.img_dir, decode=not args.no_decode, input_size=args.input_size)
    c = res.counts
    head = f"{args.ann_file}: {c['images']} images, {c['annotations']} annotations, {c['categories']} categories"
    if res.ok:
        warned = sum(len(v) for v in res.warnings.values())
        print(f"{head}: OK" + (f" ({warned} warning(s))" if warned else ""))
        if warned:
            print("\n".join(res.lines(args.examples)))
        return 0
    total = sum(len(v) for v in res.problems.values())
    print(f"{head}: {total} problem(s)")
    print("\n".join(res.lines(args.examples)))
    return 1


def _make_shapes(args) -> int:
    from detcore.errors import DetcoreError
    from detcore_coco.shapes import make_shapes

    if args.size < 32:
        raise DetcoreError(f"--size must be at least 32 pixels, got {args.size}")
    out = make_shapes(args.dir, train=args.train, val=args.val, size=args.size, seed=args.seed)
    for split, data in out.items():
        print(f"{os.path.join(args.dir, split + '.json')}: {len(data['images'])} images, {len(data['annotations'])} objects")
    return 0
