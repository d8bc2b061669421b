"""``detcore train``."""

from __future__ import annotations

import argparse

from detcore.cli.config import add_runfile_args, load_from_args
from detcore.errors import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    # Optional for argparse only: `--resume RUN.toml` takes the next word as
    # its value, and run() gives it back to the run file.
    add_runfile_args(parser, optional=True)
    parser.add_argument("--work-dir", help="output directory (default: work_dirs/<run file stem>)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="PATH|auto",
        help="resume from a checkpoint; 'auto' (or no value) picks the newest good one in the work dir",
    )
    parser.add_argument("--auto-resume", dest="resume", action="store_const", const="auto", help="same as --resume auto")
    parser.add_argument("--load-from", metavar="PATH", help="initialise weights from a checkpoint (fine-tuning)")
    parser.add_argument("--no-validate", action="store_true", help="skip validation during training")
    parser.add_argument("--auto-scale-lr", action="store_true", help="scale lr by global batch size / base_batch_size")
    parser.add_argument("--seed", type=int, help="random seed (overrides the run file)")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-exact resume on CPU)")
    parser.add_argument("--amp", choices=["bf16", "fp16"], help="mixed precision")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the run file's, else auto)")
    parser.add_argument("--launcher", choices=["none", "torchrun", "slurm", "mpi"], help="how processes were started (default: detected)")
    parser.add_argument("--nproc", type=int, metavar="N", help="start N local worker processes (torch.distributed)")


def cli_overrides(args) -> list[str]:
    """Command-line flags that are run-file keys, as --set overrides."""
    extra = []
    if getattr(args, "work_dir", None):
        extra.append(f"work_dir={_toml_str(args.work_dir)}")
    if getattr(args, "seed", None) is not None:
        extra.append(f"seed={args.seed}")
    if getattr(args, "deterministic", False):
        extra.append("train.deterministic=true")
    if getattr(args, "amp", None):
        extra.append(f"train.amp={_toml_str(args.amp)}")
    if getattr(args, "device", None):
        extra.append(f"device={_toml_str(args.device)}")
    if getattr(args, "load_from", None):
        extra.append(f"load_from={_toml_str(args.load_from)}")
    if getattr(args, "auto_scale_lr", False):
        extra.append("auto_scale_lr.enable=true")
    return extra


def _toml_str(s: str) -> str:
    import json

    return json.dumps(str(s))


def fix_resume_runfile(args) -> None:
    """``--resume`` takes an optional value, so ``train --resume RUN.toml``
    hands the run file to it: a value ending in ``.toml`` is never a
    checkpoint, so it is the run file, resumed with ``auto``."""
    resume = args.resume
    if resume is not None and resume.lower().endswith(".toml"):
        if args.runfile is None:
            args.runfile, args.resume = resume, "auto"
        else:
            raise UsageError(
                f"--resume {resume}: that is a run file, not a checkpoint; --resume takes a checkpoint "
                f"(.pth) or 'auto' (the newest good one in the work dir): "
                f"detcore train {args.runfile} --resume auto"
            )
    if args.runfile is None:
        raise UsageError("the run file is missing: detcore train RUN.toml [--resume [PATH|auto]]")


def run(args) -> int:
    """``--nproc N`` starts N local workers (each runs this again under the
    launcher); otherwise this process trains (alone, or as one rank of a
    torchrun/Slurm job) through :func:`detcore.train`'s own code."""
    import sys

    fix_resume_runfile(args)
    args.overrides = [*args.overrides, *cli_overrides(args)]
    loaded = load_from_args(args)
    argv = getattr(args, "argv", None) or sys.argv[1:]
    if getattr(args, "nproc", None):
        from detcore.engine import dist

        return dist.launch_local(args.nproc, list(argv), port=loaded.cfg.dist.port)
    from detcore.api import train_run

    result = train_run(loaded, resume=args.resume, validate=not args.no_validate, launcher=args.launcher,
                       argv=argv)
    return result.exit_status
