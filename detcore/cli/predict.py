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


def run(args) -> int:
    from detcore.cli.inputs import collect_inputs, unique_stems
    from detcore.data.image_io import read_image
    from detcore.detector import Detector

    if not 0.0 <= args.score_thr <= 1.0:
        raise UsageError(f"--score-thr must be in [0, 1], got {args.score_thr}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    loaded = load_from_args(args, data_splits=())
    files, problems = collect_inputs(args.inputs, recursive=args.recursive)
    errors = [{"input": item, "error": reason} for item, reason in problems]
    for item, reason in problems:
        _warn(f"skipped '{item}': {reason}")
    if not files:
        listed = "; ".join(f"{e['input']}: {e['error']}" for e in errors)
        raise DetcoreError(f"no image to predict on ({listed})")
    detector = Detector.from_run(loaded, args.checkpoint, device=args.device, batch_size=args.batch_size)
    if not detector.meta.get("class_names"):
        _warn(f"checkpoint '{args.checkpoint}' records no class names; using class indices")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = unique_stems(files)

    results = []
    n_dets = 0
    t_start = time.perf_counter()
    for start in range(0, len(files), detector.batch_size):
        # Each file is read here, not by Detector.predict, so that one broken
        # file is reported and skipped while the others still run.
        ready = []
        for i, path in enumerate(files[start:start + detector.batch_size], start):
            try:
                ready.append((i, str(path), read_image(path)))
            except DetcoreError as exc:
                errors.append({"input": str(path), "error": str(exc)})
                _warn(f"skipped '{path}': {exc}")
        if not ready:
            continue
        preds = detector._predict_read([img for _, _, img in ready], [p for _, p, _ in ready],
                                       score_thr=args.score_thr, start_index=ready[0][0])
        for (i, _, _), pred in zip(ready, preds):
            n_dets += len(pred)
            entry = pred.to_dict()
            if args.draw:
                entry["drawn"] = str(pred.save(out_dir / f"{names[i]}.{args.format}"))
            results.append(entry)
    elapsed = time.perf_counter() - t_start

    record = {
        "checkpoint": str(args.checkpoint),
        "run_file": str(loaded.path),
        "class_names": list(detector.class_names),
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
