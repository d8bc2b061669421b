"""``detcore train``: from parsed arguments to a finished run."""

from __future__ import annotations

import sys

from detcore.engine import dist

__all__ = ["train_from_args", "train"]


def train(run, *, resume: str | None = None, no_validate: bool = False, launcher: str | None = None, argv=None) -> int:
    """Train ``run`` (a :class:`detcore.runfile.Run`) in this process; the exit
    status (0; 143/130 when stopped by SIGTERM/SIGINT after saving)."""
    from detcore.engine.runner import Runner

    return Runner(run, resume=resume, no_validate=no_validate, launcher=launcher, argv=argv).train()


def train_from_args(run, args) -> int:
    """``detcore train`` after the run file is loaded: ``--nproc N`` starts N
    local workers (each runs this again under the launcher), otherwise
    trains in this process (one rank of a torchrun/Slurm job, or alone)."""
    argv = getattr(args, "argv", None) or sys.argv[1:]
    if getattr(args, "nproc", None):
        return dist.launch_local(args.nproc, list(argv), port=run.cfg.dist.port)
    try:
        return train(
            run,
            resume=getattr(args, "resume", None),
            no_validate=getattr(args, "no_validate", False),
            launcher=getattr(args, "launcher", None),
            argv=argv,
        )
    finally:
        dist.cleanup()
