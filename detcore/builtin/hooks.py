"""detcore's own runner hook: ``progress``, the training console.

Every run gets one with the defaults; a ``[[hooks]] type = "progress"`` table
replaces it with other settings.
"""

from __future__ import annotations

from typing import Any, Literal

from detcore import hookimpl
from detcore.catalog import check_with
from detcore.errors import ConfigCheckError


def _check_interval(args: dict, ctx) -> None:
    v = args.get("interval")
    if v is not None and (not isinstance(v, int) or v < 1):
        raise ConfigCheckError(f"must be a positive integer, got {v!r}", key="interval")


@check_with(_check_interval)
def progress(
    interval: int | None = None,
    mode: Literal["auto", "bar", "lines"] = "auto",
) -> Any:
    """The training console: a progress bar (loss, lr, ETA; validation too)
    when stdout is a terminal, plain log lines otherwise (``mode = "auto"``;
    ``"bar"`` or ``"lines"`` force one). In line mode the runner's line comes
    every ``train.log_interval`` iterations, plus one after the first
    iteration and one every ``interval`` iterations when set. Every run has
    it; this table only changes its settings."""
    from detcore.engine.progress import Progress

    return Progress(interval=interval, mode=mode)


@hookimpl
def detcore_runner_hooks() -> dict[str, Any]:
    return {"progress": progress}
