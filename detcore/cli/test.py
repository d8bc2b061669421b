"""``detcore test RUN.toml --checkpoint CKPT [--out preds.json] [--show-dir DIR]``.

Evaluates a checkpoint on the test split (``[data.test]``, else
``[data.val]``) with the run file's ``[[metrics]]``, after checking that the
checkpoint's class names and category ids match the dataset's. Works under
torchrun (or ``--launcher slurm``) like ``detcore train``: each rank predicts
its shard, rank 0 computes the metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from detcore.cli.config import add_runfile_args, load_from_args
from detcore.cli.inference import (
    add_device_arg,
    cat_ids_of,
    class_names_of,
    split_table,
)
from detcore.errors import DetcoreError, UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    add_runfile_args(parser)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint to evaluate")
    parser.add_argument("--split", choices=["test", "val"], help="dataset split (default: test if the run file has one, else val)")
    parser.add_argument("--out", metavar="FILE", help="write the predictions as COCO results JSON (masks: FILE with .segm.json too)")
    parser.add_argument("--show-dir", metavar="DIR", help="write each image with its predictions drawn")
    parser.add_argument("--show-score-thr", type=float, default=0.3, help="score threshold for --show-dir (default 0.3)")
    add_device_arg(parser)
    parser.add_argument("--batch-size", type=int, help="images per process per batch (default: data.val_batch_size, else data.batch_size)")
    parser.add_argument("--launcher", choices=["none", "torchrun", "slurm"], help="how processes were started (default: detected)")
    parser.add_argument("--nproc", type=int, metavar="N", help="start N local worker processes (torch.distributed), like 'detcore train --nproc'")


class PredictionCollector:
    """A metric that computes nothing and keeps the gathered predictions:
    through it ``--out`` gets exactly what the configured metrics scored."""

    def __init__(self) -> None:
        self.predictions: list[dict] | None = None

    def evaluate(self, predictions, dataset) -> dict:
        self.predictions = predictions
        return {}


def coco_results(predictions: list[dict], cat_ids: list[int] | None) -> tuple[list[dict], list[dict]]:
    """``(bbox records, segm records)`` in COCO results format (what
    ``COCO.loadRes`` reads). ``category_id`` is ``cat_ids[label]``, or the
    0-based label when the dataset has no category ids."""
    bbox, segm = [], []
    for pred in predictions:
        image_id = int(pred["image_id"])
        boxes = pred["boxes"].double().tolist()
        scores = pred["scores"].double().tolist()
        labels = pred["labels"].tolist()
        cats = [int(cat_ids[lab]) if cat_ids is not None else int(lab) for lab in labels]
        for (x1, y1, x2, y2), s, c in zip(boxes, scores, cats):
            bbox.append({"image_id": image_id, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
        if "masks" in pred and len(labels):
            import numpy as np
            from pycocotools import mask as mask_util

            masks = pred["masks"]
            masks = (masks[:, 0] if masks.ndim == 4 else masks).numpy().astype(np.uint8)
            rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
            for rle, s, c in zip(rles, scores, cats):
                rle["counts"] = rle["counts"].decode("ascii")
                segm.append({"image_id": image_id, "category_id": c, "segmentation": rle, "score": s})
    return bbox, segm


def segm_path(out: Path) -> Path:
    name = out.name[: -len(".json")] if out.name.endswith(".json") else out.name
    return out.with_name(name + ".segm.json")


class ShowWriter:
    """Draws each evaluated batch (on the image the model saw) as it comes."""

    def __init__(self, out_dir: Path, class_names: list[str], score_thr: float):
        self.out_dir = out_dir
        self.class_names = class_names
        self.score_thr = score_thr
        self.written = 0
        out_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, batch, outputs) -> None:
        from detcore.visualize import draw_detections, image_to_uint8, save_image

        images, targets = batch
        for img, target, out in zip(images, targets, outputs):
            keep = out["scores"] >= self.score_thr
            uint8 = image_to_uint8(img.detach().cpu())
            masks = out.get("masks")
            drawn = draw_detections(
                uint8, out["boxes"][keep], out["labels"][keep], out["scores"][keep], self.class_names,
                masks=None if masks is None else masks[keep],
            )
            image_id = target.get("image_id", target.get("_index"))
            image_id = int(image_id.item() if hasattr(image_id, "item") else image_id)
            save_image(drawn, self.out_dir / f"{image_id}.jpg")
            self.written += 1


# pycocotools' summary lines, in the order of the 12 numbers (STAT_NAMES of detcore-coco).
_COCO_LINES = (
    ("mAP", "Average Precision", "0.50:0.95", "all", 100),
    ("mAP_50", "Average Precision", "0.50", "all", 100),
    ("mAP_75", "Average Precision", "0.75", "all", 100),
    ("mAP_s", "Average Precision", "0.50:0.95", "small", 100),
    ("mAP_m", "Average Precision", "0.50:0.95", "medium", 100),
    ("mAP_l", "Average Precision", "0.50:0.95", "large", 100),
    ("AR@1", "Average Recall", "0.50:0.95", "all", 1),
    ("AR@10", "Average Recall", "0.50:0.95", "all", 10),
    ("AR@100", "Average Recall", "0.50:0.95", "all", 100),
    ("AR_s@100", "Average Recall", "0.50:0.95", "small", 100),
    ("AR_m@100", "Average Recall", "0.50:0.95", "medium", 100),
    ("AR_l@100", "Average Recall", "0.50:0.95", "large", 100),
)


def format_results(results: dict[str, float]) -> str:
    """The COCO summary table (as pycocotools prints it) for each IoU type
    whose 12 numbers are in ``results``, then every other metric."""
    from detcore.engine.evaluation import format_metrics

    blocks, shown = [], set()
    prefixes = dict.fromkeys(k[: -len("_mAP")] for k in results if k.endswith("_mAP"))
    for prefix in prefixes:
        keys = [f"{prefix}_{name}" for name, *_ in _COCO_LINES]
        if not all(k in results for k in keys):
            continue
        lines = [f"{prefix}:"]
        for key, (_, what, iou, area, dets) in zip(keys, _COCO_LINES):
            short = "(AP)" if what.endswith("Precision") else "(AR)"
            lines.append(
                f" {what:<18} {short} @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = {results[key]:.3f}"
            )
        blocks.append("\n".join(lines))
        shown.update(keys)
    rest = {k: v for k, v in results.items() if k not in shown}
    if rest or not blocks:
        blocks.append(format_metrics(rest))
    # One line with every number at full precision, easy to grep from logs.
    blocks.append("metrics: " + " ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return "\n".join(blocks)


def _console_logging(is_main: bool):
    """Show the metrics' warnings (no predictions at all, ...) on rank 0;
    their numbers are printed by :func:`format_results`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("detcore test: %(message)s"))
    handler.setLevel(logging.WARNING)
    log = logging.getLogger("detcore")
    if is_main:
        log.addHandler(handler)
    return log, handler


def run(args) -> int:
    from detcore.cli.inference import load_model
    from detcore.engine import dist
    from detcore.engine.build import build_dataset, build_metrics
    from detcore.engine.checkpoint import check_checkpoint_classes, read_checkpoint
    from detcore.engine.evaluation import evaluate

    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.show_score_thr <= 1.0:
        raise UsageError(f"--show-score-thr must be in [0, 1], got {args.show_score_thr}")
    loaded = load_from_args(args, data_splits=("val", "test"))
    cfg = loaded.cfg
    split, _ = split_table(loaded, args.split)
    if args.nproc:
        argv = getattr(args, "argv", None) or sys.argv[1:]
        return dist.launch_local(args.nproc, list(argv), port=cfg.dist.port)
    info, device = dist.init_distributed(
        args.launcher,
        backend=cfg.dist.backend,
        device=args.device or cfg.device,
        timeout_s=cfg.dist.timeout_s,
    )
    log, handler = _console_logging(info.is_main)
    try:
        dataset = build_dataset(loaded, split)
        ckpt = read_checkpoint(args.checkpoint)
        # Silent class drift (a test set with other classes or category ids)
        # would score labels against the wrong classes: refuse before predicting.
        check_checkpoint_classes(ckpt, dataset, split=split, name=str(args.checkpoint))
        model, _ = load_model(loaded, args.checkpoint, device, checkpoint_dict=ckpt)
        metrics = build_metrics(loaded)
        collector = PredictionCollector() if args.out else None
        class_names = list(getattr(dataset, "class_names", []) or class_names_of(ckpt) or [])
        show = ShowWriter(Path(args.show_dir), class_names, args.show_score_thr) if args.show_dir else None
        if not metrics and collector is None and show is None:
            raise DetcoreError(
                f"{loaded.path} has no [[metrics]] table and neither --out nor --show-dir was given: "
                f"nothing to compute. Add e.g. [[metrics]] type = \"coco\"."
            )
        if info.is_main:
            print(
                f"detcore test: {args.checkpoint} on data.{split} ({len(dataset)} images, "
                f"{info.world_size} process(es), {device})",
                flush=True,
            )
        t0 = time.perf_counter()
        results = evaluate(
            model,
            dataset,
            [*metrics, *([collector] if collector else [])],
            device=device,
            batch_size=args.batch_size or cfg.data.val_batch_size or cfg.data.batch_size,
            workers=cfg.data.workers,
            amp=cfg.train.amp,
            eval_timeout_s=cfg.dist.eval_timeout_s,
            on_batch=show,
        )
        elapsed = time.perf_counter() - t0
        if info.is_main:
            print(f"evaluated in {elapsed:.1f} s")
            if metrics:
                print(format_results(results), flush=True)
            if collector is not None:
                out = Path(args.out)
                cat_ids = getattr(dataset, "cat_ids", None)
                if cat_ids is None:
                    cat_ids = cat_ids_of(ckpt)
                bbox, segm = coco_results(collector.predictions or [], None if cat_ids is None else list(cat_ids))
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(bbox))
                print(f"wrote {len(bbox)} box predictions to {out} (COCO results format)")
                if segm:
                    segm_path(out).write_text(json.dumps(segm))
                    print(f"wrote {len(segm)} mask predictions to {segm_path(out)}")
        if show is not None:
            total = sum(dist.all_gather_object(show.written)) if info.distributed else show.written
            if info.is_main:
                print(f"wrote {total} drawn image(s) to {args.show_dir}")
        return 0
    finally:
        log.removeHandler(handler)
        dist.cleanup()
