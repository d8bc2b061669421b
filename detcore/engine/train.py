"""Training a loaded run file in this process (``detcore.train`` and
``detcore train`` go through :func:`detcore.api.train_run`, which adds
process-group clean-up and the result)."""

from __future__ import annotations

__all__ = ["train"]


def train(run, *, resume: str | None = None, no_validate: bool = False, launcher: str | None = None, argv=None) -> int:
    """Train ``run`` (a :class:`detcore.runfile.Run`) in this process; the exit
    status (0; 143/130 when stopped by SIGTERM/SIGINT after saving)."""
    from detcore.engine.runner import Runner

    return Runner(run, resume=resume, no_validate=no_validate, launcher=launcher, argv=argv).train()
