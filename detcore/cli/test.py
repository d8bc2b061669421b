"""``detcore test RUN.toml --checkpoint CKPT [--out preds.json] [--show-dir DIR] [--plots DIR]``.

Evaluates a checkpoint on the test split (``[data.test]``, else
``[data.val]``) with the run file's ``[[metrics]]``, after checking that the
checkpoint's class names and category ids match the dataset's. Works under
torchrun (or ``--launcher slurm``) like ``detcore train``: each rank predicts
its shard, rank 0 computes the metrics.
"""

from __future__ import annotations

import argparse
import json
import sys

from detcore.cli.config import add_runfile_args, load_from_args
from detcore.cli.inference import add_device_arg
from detcore.engine.inference import split_table
from detcore.errors import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    add_runfile_args(parser)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint to evaluate")
    parser.add_argument("--split", choices=["test", "val"], help="dataset split (default: test if the run file has one, else val)")
    parser.add_argument("--out", metavar="FILE", help="write the predictions in the results format of the first metric that defines one (coco: COCO results JSON, masks in FILE.segm.json), else as detcore's JSON")
    parser.add_argument("--show-dir", metavar="DIR", help="write each image with its predictions drawn")
    parser.add_argument("--plots", metavar="DIR", help="write the metrics' figures (coco: precision-recall curves per class, confusion matrix) as PNGs to DIR")
    parser.add_argument("--show-score-thr", type=float, default=0.3, help="score threshold for --show-dir (default 0.3)")
    add_device_arg(parser)
    parser.add_argument("--batch-size", type=int, help="images per process per batch (default: data.val_batch_size, else data.batch_size)")
    parser.add_argument("--launcher", choices=["none", "torchrun", "slurm", "mpi"], help="how processes were started (default: detected)")
    parser.add_argument("--nproc", type=int, metavar="N", help="start N local worker processes (torch.distributed), like 'detcore train --nproc'")


def run(args) -> int:
    """Checks the options, starts ``--nproc`` workers, else evaluates here
    through :func:`detcore.test`'s own code."""
    from detcore.api import test_run
    from detcore.engine import dist

    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0.0 <= args.show_score_thr <= 1.0:
        raise UsageError(f"--show-score-thr must be in [0, 1], got {args.show_score_thr}")
    if args.device:
        args.overrides = [*args.overrides, f"device={json.dumps(args.device)}"]
    loaded = load_from_args(args, data_splits=("val", "test"))
    split_table(loaded, args.split)  # a missing split is an error before any process starts
    if args.nproc:
        argv = getattr(args, "argv", None) or sys.argv[1:]
        return dist.launch_local(args.nproc, list(argv), port=loaded.cfg.dist.port)
    test_run(
        loaded, args.checkpoint, split=args.split, batch_size=args.batch_size, out=args.out,
        show_dir=args.show_dir, show_score_thr=args.show_score_thr, plots=args.plots, launcher=args.launcher,
        echo=lambda s: print(s, flush=True),
    )
    return 0
