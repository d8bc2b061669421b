"""``detcore predict RUN.toml --checkpoint CKPT INPUTS... --out-dir DIR``.

Runs a trained detector on image files, folders and globs. Writes
``DIR/predictions.json`` (boxes in original image pixels, scores, class
names) and one drawn image per input. An input that cannot be read is
reported and skipped; the others still run and the exit status is 1 at the
end. Images get the test (else val) dataset's transforms, as in evaluation;
class names come from the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from detcore.cli.config import add_runfile_args, load_from_args
from detcore.cli.inference import add_device_arg
from detcore.errors import DetcoreError, UsageError

PREDICTIONS_FILE = "predictions.json"


def configure(parser: argparse.ArgumentParser) -> None:
    add_runfile_args(parser)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint to run")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs (quote globs: 'imgs/*.jpg')")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help=f"where {PREDICTIONS_FILE} and drawn images go")
    parser.add_argument("--score-thr", type=float, default=0.3, help="keep detections scoring at least this (default 0.3)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: data.val_batch_size, else data.batch_size)")
    parser.add_argument("--recursive", action="store_true", help="include images in sub-folders of folder inputs")
    parser.add_argument("--no-draw", dest="draw", action="store_false", help="write the JSON only")
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg", help="drawn image format (default jpg)")
    add_device_arg(parser)


def _warn(msg: str) -> None:
    print(f"detcore predict: {msg}", file=sys.stderr, flush=True)


def prepare(image, pipeline, index: int):
    """Apply the evaluation transforms to a uint8 image; returns the model input."""
    import torch
    from torchvision import tv_tensors

    if pipeline is None:
        return image
    h, w = image.shape[-2:]
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(h, w)),
        "labels": torch.zeros(0, dtype=torch.int64),
        "image_id": index,
        "orig_size": (h, w),
    }
    out, _ = pipeline(tv_tensors.Image(image), target)
    return out


def to_original(det: dict, in_size: tuple[int, int], orig_size: tuple[int, int]) -> dict:
    """Detections in the model input's pixels mapped back to the original
    image (evaluation's mapping), boxes clamped to the image."""
    from detcore.engine.evaluation import to_original as eval_to_original

    oh, ow = orig_size
    det = eval_to_original(det, in_size, {"image_id": 0, "orig_size": (oh, ow)})
    det.pop("image_id", None)
    det["boxes"] = det["boxes"].clone()
    det["boxes"][:, 0::2] = det["boxes"][:, 0::2].clamp(0, ow)
    det["boxes"][:, 1::2] = det["boxes"][:, 1::2].clamp(0, oh)
    return det


def _mask_rle(mask) -> dict | None:
    try:
        import numpy as np
        from pycocotools import mask as mask_utils
    except ImportError:
        return None
    m = (mask[0] > 0.5).numpy().astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def detections_json(det: dict, class_names: list[str]) -> list[dict]:
    out = []
    for i in range(len(det["boxes"])):
        label = int(det["labels"][i])
        item = {
            "box": [round(float(v), 2) for v in det["boxes"][i]],
            "score": round(float(det["scores"][i]), 4),
            "label": label,
            "class": class_names[label] if 0 <= label < len(class_names) else str(label),
        }
        if "masks" in det:
            rle = _mask_rle(det["masks"][i])
            if rle is not None:
                item["mask_rle"] = rle
        out.append(item)
    return out


def run(args) -> int:
    import torch

    from detcore.cli.inference import (
        class_names_of,
        eval_pipeline,
        load_model,
        pick_device,
    )
    from detcore.cli.inputs import collect_inputs, unique_stems
    from detcore.data.image_io import read_image
    from detcore.engine.batches import image_to_float
    from detcore.visualize import draw_detections, save_image

    if not 0.0 <= args.score_thr <= 1.0:
        raise UsageError(f"--score-thr must be in [0, 1], got {args.score_thr}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    loaded = load_from_args(args, data_splits=())
    device = pick_device(args, loaded)
    files, problems = collect_inputs(args.inputs, recursive=args.recursive)
    errors = [{"input": item, "error": reason} for item, reason in problems]
    for item, reason in problems:
        _warn(f"skipped '{item}': {reason}")
    if not files:
        listed = "; ".join(f"{e['input']}: {e['error']}" for e in errors)
        raise DetcoreError(f"no image to predict on ({listed})")
    model, ckpt = load_model(loaded, args.checkpoint, device)
    class_names = class_names_of(ckpt)
    if class_names is None:
        num = loaded.cfg.model.get("num_classes")
        class_names = [str(i) for i in range(num or 0)]
        _warn(f"checkpoint '{args.checkpoint}' records no class names; using class indices")
    pipeline = eval_pipeline(loaded)
    batch_size = args.batch_size or loaded.cfg.data.val_batch_size or loaded.cfg.data.batch_size
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = unique_stems(files)

    results = []
    n_dets = 0
    t_start = time.perf_counter()
    for start in range(0, len(files), batch_size):
        chunk = list(enumerate(files[start:start + batch_size], start))
        ready = []
        for i, path in chunk:
            try:
                image = read_image(path)
                model_input = prepare(image, pipeline, i)
            except DetcoreError as exc:
                errors.append({"input": str(path), "error": str(exc)})
                _warn(f"skipped '{path}': {exc}")
                continue
            ready.append((i, path, image, model_input))
        if not ready:
            continue
        with torch.no_grad():
            outputs = model([image_to_float(m, device) for _, _, _, m in ready])
        for (i, path, image, model_input), det in zip(ready, outputs):
            h, w = image.shape[-2:]
            det = to_original(det, tuple(model_input.shape[-2:]), (h, w))
            keep = det["scores"] >= args.score_thr
            det = {k: v[keep] for k, v in det.items()}
            n_dets += len(det["boxes"])
            entry = {"file": str(path), "height": int(h), "width": int(w),
                     "detections": detections_json(det, class_names)}
            if args.draw:
                drawn = draw_detections(image, det["boxes"], det["labels"], det["scores"], class_names,
                                        masks=det.get("masks"))
                entry["drawn"] = str(save_image(drawn, out_dir / f"{names[i]}.{args.format}"))
            results.append(entry)
    elapsed = time.perf_counter() - t_start

    record = {
        "checkpoint": str(args.checkpoint),
        "run_file": str(loaded.path),
        "class_names": class_names,
        "score_thr": args.score_thr,
        "images": results,
        "errors": errors,
    }
    pred_file = out_dir / PREDICTIONS_FILE
    pred_file.write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"predicted {len(results)} image(s) in {elapsed:.1f} s: {n_dets} detection(s) with score >= "
        f"{args.score_thr}; wrote {pred_file}" + (f" and drawn images to {out_dir}" if args.draw else "")
    )
    if errors:
        _warn(f"{len(errors)} input(s) failed (listed above and under 'errors' in {pred_file})")
        return 1
    return 0
