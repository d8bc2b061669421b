"""``detcore export RUN.toml --checkpoint CKPT --format torchscript|onnx --out FILE``.

The exported model is run next to the eager one on the same image (the first
image of the test/val split, else a random one) and the command fails when
their detections differ. A ``FILE.json`` next to it records the class names
and the input format.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detcore.cli.config import add_runfile_args, load_from_args
from detcore.errors import DetcoreError, RunFileError, UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    add_runfile_args(parser)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint with the weights")
    parser.add_argument("--format", required=True, choices=["torchscript", "onnx"], help="export format")
    parser.add_argument("--out", required=True, metavar="FILE", help="file to write (.pt for TorchScript, .onnx)")
    parser.add_argument(
        "--size", type=int, nargs="+", metavar=("H", "W"),
        help="ONNX input size (one number: square); default: the first test/val image's size after its transforms",
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip comparing with eager mode")


CHECK_IMAGES = 4


def _sample_images(loaded, size) -> list:
    """Float images ``[3, H, W]`` to export with and check on: the first
    test/val images (resized to ``size`` when given), else random ones."""
    import torch

    from detcore.engine.batches import image_to_float
    from detcore.engine.inference import build_dataset

    images = []
    try:
        _, dataset = build_dataset(loaded, None)
        images = [image_to_float(dataset[i][0], "cpu") for i in range(min(CHECK_IMAGES, len(dataset)))]
    except RunFileError:
        pass
    if not images:
        if size is None:
            raise DetcoreError(
                f"{loaded.path} has no test or val dataset to take the input size from: give --size H W"
            )
        generator = torch.Generator().manual_seed(0)
        return [torch.rand(3, *size, generator=generator) for _ in range(CHECK_IMAGES)]
    size = size or tuple(images[0].shape[-2:])
    return [
        im if tuple(im.shape[-2:]) == tuple(size)
        else torch.nn.functional.interpolate(im[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
        for im in images
    ]


def run(args) -> int:
    import torch

    from detcore.engine import export as ex
    from detcore.engine.inference import cat_ids_of, class_names_of, load_model

    if args.format == "onnx":
        ex.require_onnx()  # before the checkpoint is loaded
    loaded = load_from_args(args, data_splits=())
    size = None
    if args.size:
        if len(args.size) > 2:
            raise UsageError("--size takes one or two numbers: H [W]")
        size = (args.size[0], args.size[-1])
    model, ckpt = load_model(loaded, args.checkpoint, torch.device("cpu"))
    images = _sample_images(loaded, size)
    image = images[0]
    with_masks = "masks" in ex.run_eager(model, image)
    out = Path(args.out)
    if args.format == "torchscript":
        ex.export_torchscript(model, out)
        input_spec = "list of float tensors [3, H, W] in 0..1, any size"
    else:
        h, w = image.shape[-2:]
        ex.export_onnx(model, out, int(h), int(w), opset=args.opset, with_masks=with_masks)
        input_spec = f"'images': float [1, 3, {h}, {w}] in 0..1"
    info = {
        "format": args.format,
        "input": input_spec,
        "outputs": "boxes [K, 4] xyxy (input pixels), scores [K], labels [K] (0-based)"
        + (", masks [K, 1, H, W]" if with_masks else ""),
        "class_names": class_names_of(ckpt),
        "cat_ids": cat_ids_of(ckpt),
        "checkpoint": str(args.checkpoint),
        "run_file": str(loaded.path),
        "model": loaded.cfg.model.get("type"),
    }
    if args.format == "onnx":
        info["opset"] = args.opset
    Path(str(out) + ".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out}.json")
    if not args.check:
        return 0
    checks = [ex.compare(ex.run_eager(model, im), ex.run_exported(out, args.format, im)) for im in images]
    bad = [c for c in checks if not c.ok]
    worst = bad[0] if bad else max(checks, key=lambda c: (c.max_box_diff, c.max_score_diff))
    n_dets = sum(c.eager_count for c in checks)
    print(f"check against eager mode on {len(checks)} image(s), {n_dets} detections: worst {worst.summary()}")
    if bad:
        print(
            f"detcore export: error: the exported model's detections differ from eager mode's on "
            f"{len(bad)} of {len(checks)} image(s) ({worst.summary()}); do not use {out}",
            file=sys.stderr,
        )
        return 1
    if n_dets == 0:
        print(
            "detcore export: warning: the model detects nothing on the check images, so the check "
            "compared empty outputs (an untrained model, or model.score_thresh too high)",
            file=sys.stderr,
        )
    return 0
