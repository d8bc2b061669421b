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
    class_names_of,
    split_table,
)
from detcore.errors import DetcoreError, UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    add_runfile_args(parser)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint to evaluate")
    parser.add_argument("--split", choices=["test", "val"], help="dataset split (default: test if the run file has one, else val)")
    parser.add_argument("--out", metavar="FILE", help="write the predictions in the results format of the first metric that defines one (coco: COCO results JSON, masks in FILE.segm.json), else as detcore's JSON")
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


class RecordedMetric:
    """A configured metric with the results of its last ``evaluate``, so that
    its own ``summary`` gets exactly the numbers it computed."""

    def __init__(self, metric) -> None:
        self.metric = metric
        self.results: dict[str, float] = {}

    def evaluate(self, predictions, dataset) -> dict:
        self.results = dict(self.metric.evaluate(predictions, dataset))
        return self.results


def format_results(recorded: list[RecordedMetric], results: dict[str, float]) -> str:
    """Each metric's ``summary(results)`` (a name/value table for a metric
    without one), then one line with every number for scripts."""
    from detcore.engine.evaluation import format_metrics

    blocks = []
    for rec in recorded:
        summary = getattr(rec.metric, "summary", None)
        blocks.append(summary(rec.results) if callable(summary) else format_metrics(rec.results))
    # One line with every number at full precision, easy to grep from logs.
    blocks.append("metrics: " + " ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return "\n".join(blocks)


def write_predictions(metrics: list, predictions: list[dict], dataset, out: Path) -> list[str]:
    """``--out``: the first metric with a ``dump`` method writes the
    predictions in its own results format; without one, detcore's JSON
    (one record per image: ``image_id``, ``boxes`` xyxy in original
    pixels, ``scores``, ``labels``). Returns one line per file written."""
    for metric in metrics:
        dump = getattr(metric, "dump", None)
        if callable(dump):
            return list(dump(predictions, dataset, out))
    records = [
        {
            "image_id": int(p["image_id"]),
            "boxes": p["boxes"].double().tolist(),
            "scores": p["scores"].double().tolist(),
            "labels": p["labels"].tolist(),
        }
        for p in predictions
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records))
    return [f"{out} ({len(records)} images, detcore predictions JSON)"]


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
    from detcore.engine.checkpoint import check_checkpoint_classes
    from detcore.engine.evaluation import evaluate
    from detcore.weights import read_checkpoint

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
        metrics = [RecordedMetric(m) for m in build_metrics(loaded)]
        collector = PredictionCollector() if args.out else None
        class_names = list(getattr(dataset, "class_names", []) or class_names_of(ckpt) or [])
        show = ShowWriter(Path(args.show_dir), class_names, args.show_score_thr) if args.show_dir else None
        if not metrics and collector is None and show is None:
            raise DetcoreError(
                f"{loaded.path} has no [[metrics]] table and neither --out nor --show-dir was given: "
                f"nothing to compute. Add a [[metrics]] table; installed metrics: "
                f"{', '.join(loaded.catalog.names('metric')) or 'none'}."
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
                print(format_results(metrics, results), flush=True)
            if collector is not None:
                written = write_predictions(
                    [m.metric for m in metrics], collector.predictions or [], dataset, Path(args.out)
                )
                for line in written:
                    print(f"wrote {line}")
        if show is not None:
            total = sum(dist.all_gather_object(show.written)) if info.distributed else show.written
            if info.is_main:
                print(f"wrote {total} drawn image(s) to {args.show_dir}")
        return 0
    finally:
        log.removeHandler(handler)
        dist.cleanup()
