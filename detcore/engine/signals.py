"""SIGTERM / SIGINT during training: finish the current iteration, save a
checkpoint, print how to resume, exit 143 / 130 (a second Ctrl-C stops at
once)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["Interrupted", "StopSignals", "resume_hint"]

_EXIT_STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130}


class Interrupted(Exception):
    """Raised inside the loop when SIGTERM/SIGINT asked the run to stop."""


class StopSignals:
    """Records SIGTERM/SIGINT instead of dying, so the loop stops at an
    iteration boundary. ``received`` is the signal number, or ``None``."""

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self, on_signal: Callable[[int], None] | None = None) -> list[Callable[[], None]]:
        """Install the handlers (main thread only: elsewhere Python cannot);
        the callables that restore the previous ones."""
        if threading.current_thread() is not threading.main_thread():
            return []

        def handler(signum, frame):
            if self.received is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            self.received = signum
            if on_signal is not None:
                on_signal(signum)

        restore = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            old = signal.signal(sig, handler)
            restore.append(lambda sig=sig, old=old: signal.signal(sig, old))
        return restore

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    @property
    def exit_status(self) -> int:
        return _EXIT_STATUS.get(self.received, 1)


def resume_hint(path: Path, *, run_path, argv: list[str] | None, world_size: int) -> str:
    """The command that resumes this run from ``path``: the command line it
    was started with (``--resume`` replaced)."""
    if os.environ.get("DETCORE_LAUNCH_ARGV"):  # a worker of `detcore train --nproc N`
        argv = json.loads(os.environ["DETCORE_LAUNCH_ARGV"])
    elif argv is None:
        argv = sys.argv[1:]
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            if not a.startswith("-"):
                continue
        if a in ("--resume", "--auto-resume") or a.startswith("--resume="):
            skip = a == "--resume"
            continue
        out.append(a)
    if "train" not in out:
        out = ["train", str(run_path)]
    hint = "detcore " + shlex.join([*out, "--resume", str(path)])
    if world_size > 1 and not os.environ.get("DETCORE_LAUNCH_ARGV"):
        hint += f"  (started the same way as this {world_size}-process run: torchrun or srun)"
    return hint
