"""The run's logger (console + timestamped log file), the scalars file and
the environment report."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from pathlib import Path

__all__ = [
    "ConsoleHandler",
    "ScalarWriter",
    "close_logger",
    "console_handler",
    "environment",
    "environment_summary",
    "format_environment",
    "setup_logger",
]

# ``logger.info(..., extra=FILE_ONLY)``: the record goes to the log file, not
# the console (the environment dump).
FILE_ONLY = {"console": False}
# ``extra=ITERATION_LINE`` marks the runner's training line, which a progress
# bar replaces on the console.
ITERATION_LINE = {"iteration_line": True}


class ConsoleHandler(logging.StreamHandler):
    """The run's console: leaves out file-only records and, while a progress
    bar is on screen, writes through ``tqdm.write`` (above the bar) and
    leaves out the iteration lines the bar replaces."""

    def __init__(self, stream=None):
        super().__init__(stream if stream is not None else sys.stdout)
        self._tqdm = False
        self._hide_iterations = False

    def use_tqdm(self, on: bool = True, *, hide_iteration_lines: bool = False) -> None:
        self._tqdm = on
        self._hide_iterations = on and hide_iteration_lines

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False
        if self._hide_iterations and getattr(record, "iteration_line", False):
            return False
        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        if not self._tqdm:
            return super().emit(record)
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # as logging.StreamHandler.emit does
            self.handleError(record)


def console_handler(logger: logging.Logger) -> ConsoleHandler | None:
    """The :class:`ConsoleHandler` of a run's logger (``None`` on other ranks)."""
    return next((h for h in logger.handlers if isinstance(h, ConsoleHandler)), None)

_FORMAT = "%(asctime)s %(levelname).1s %(message)s"


def setup_logger(work_dir: Path | None, timestamp: str, *, is_main: bool, rank: int = 0) -> tuple[logging.Logger, Path | None]:
    """``(logger, log file)``. Rank 0 logs INFO to stdout and
    ``work_dir/<timestamp>.log``; other ranks log errors only (to stderr).
    A record logged with ``extra=FILE_ONLY`` goes to the log file only (an
    error the CLI prints itself as ``detcore: error: ...``)."""
    logger = logging.getLogger(f"detcore.run.{rank}")
    close_logger(logger)
    logger.propagate = False
    fmt = logging.Formatter(_FORMAT, datefmt="%m-%d %H:%M:%S")
    log_file = None
    if is_main:
        logger.setLevel(logging.INFO)
        console = ConsoleHandler(sys.stdout)
        console.setFormatter(fmt)
        console.addFilter(lambda record: not getattr(record, "file_only", False))
        logger.addHandler(console)
        if work_dir is not None:
            log_file = Path(work_dir) / f"{timestamp}.log"
            fh = _LogFileHandler(log_file, encoding="utf-8")
            fh.setFormatter(fmt)
            logger.addHandler(fh)
    else:
        logger.setLevel(logging.ERROR)
        err = logging.StreamHandler(sys.stderr)
        err.setFormatter(logging.Formatter(f"[rank {rank}] " + _FORMAT, datefmt="%m-%d %H:%M:%S"))
        logger.addHandler(err)
    return logger, log_file


FILE_ONLY = {"file_only": True}


class _LogFileHandler(logging.FileHandler):
    """The run's log file. On a full disk its lines are dropped quietly (the
    console still shows them) rather than a "--- Logging error ---"
    traceback for every line; the write that filled the disk reports it."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        from detcore.engine.disk import is_disk_full

        if not is_disk_full(sys.exc_info()[1]):
            super().handleError(record)


def close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        logger.removeHandler(h)
        if isinstance(h, logging.FileHandler):
            h.close()


class ScalarWriter:
    """Appends one JSON object per line to ``scalars.jsonl`` (rank 0 only;
    a no-op elsewhere). Appending keeps the lines of an interrupted run
    before those of its resumption."""

    def __init__(self, path: Path | None):
        self.path = path
        # Unbuffered bytes: a line the disk had no room for is cut off again
        # (no half line left for the resumed run to append after).
        self._f = open(path, "ab", buffering=0) if path is not None else None  # noqa: SIM115

    def write(self, record: dict) -> None:
        if self._f is None:
            return
        from detcore.engine.disk import writing

        line = (json.dumps(record) + "\n").encode("utf-8")
        end = self._f.seek(0, os.SEEK_END)
        with writing(self.path, "the scalars file", len(line)):
            try:
                view = memoryview(line)
                while view:
                    view = view[self._f.write(view):]
            except OSError:
                os.ftruncate(self._f.fileno(), end)
                raise

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def environment(pm=None) -> dict:
    """Versions of python, torch, torchvision, CUDA/cuDNN and the GPUs, and
    every loaded plugin with its distribution and version."""
    import torch
    import torchvision

    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "num_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    try:
        import numpy

        env["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover
        pass
    if pm is not None:
        plugins = {}
        for name, _plugin in sorted(pm.list_name_plugin(), key=lambda x: str(x[0])):
            if name is None or name.startswith("runner-hook:"):
                continue
            dist, version = pm.distribution_of(name) if hasattr(pm, "distribution_of") else ("", "")
            plugins[name] = f"{dist} {version}".strip()
        env["plugins"] = plugins
    return env


def environment_summary(env: dict) -> str:
    """One line of :func:`environment` for the console (the log file gets it all)."""
    parts = [f"python {env.get('python')}", f"torch {env.get('torch')}", f"torchvision {env.get('torchvision')}"]
    device = f"device {env['device']}" if env.get("device") else "device"
    if env.get("cuda_available"):
        gpus = env.get("gpus") or []
        device += f" (CUDA {env.get('cuda')}, {len(gpus)} GPU(s)" + (f": {gpus[0]}" if gpus else "") + ")"
    else:
        device += " (no CUDA)"
    parts.append(device)
    if env.get("world_size", 1) > 1:
        parts.append(f"{env['world_size']} processes ({env.get('launcher')})")
    if "plugins" in env:
        parts.append(f"{len(env['plugins'])} plugins")
    return "environment: " + ", ".join(parts)


def format_environment(env: dict) -> str:
    lines = ["environment:"]
    for k, v in env.items():
        if k == "plugins":
            lines.append("  plugins:")
            lines += [f"    {name}: {who}" for name, who in v.items()]
        else:
            lines.append(f"  {k}: {v}")
    return "\n".join(lines)
