"""When logging, validation and a checkpoint are due: one rule for
iteration-based runs, epoch-based runs and the catch-up at the end.

* After an optimizer step: log every ``train.log_interval`` steps and at the
  last one; an iteration-based run also validates every
  ``train.val_interval`` steps and checkpoints every ``checkpoint.interval``
  steps and at the last one.
* After an epoch: an epoch-based run validates every ``train.val_interval``
  epochs and checkpoints every ``checkpoint.interval`` epochs and after the
  last one.
* At the end (the last step, ``stop_training``): validate and checkpoint the
  final weights unless that already happened at this iteration.
"""

from __future__ import annotations

import attrs

__all__ = ["Due", "Schedule"]


@attrs.frozen
class Due:
    """What is due at one point of the run."""

    log: bool = False
    validate: bool = False
    checkpoint: bool = False


@attrs.frozen
class Schedule:
    """The run's intervals (validated by the run file's schema)."""

    by_epoch: bool
    log_interval: int
    val_interval: int
    checkpoint_interval: int

    @classmethod
    def from_config(cls, cfg) -> Schedule:
        return cls(
            by_epoch=cfg.train.by_epoch,
            log_interval=cfg.train.log_interval,
            val_interval=cfg.train.val_interval,
            checkpoint_interval=cfg.checkpoint.interval,
        )

    def after_step(self, iteration: int, *, last: bool) -> Due:
        """Due after optimizer step number ``iteration`` (1-based count);
        ``last``: the run has reached ``max_iters``."""
        by_iter = not self.by_epoch
        return Due(
            log=iteration % self.log_interval == 0 or last,
            validate=by_iter and iteration % self.val_interval == 0,
            checkpoint=by_iter and (iteration % self.checkpoint_interval == 0 or last),
        )

    def after_epoch(self, epochs_done: int, *, last: bool) -> Due:
        """Due once ``epochs_done`` epochs have completed; ``last``: the run
        has reached ``max_iters``."""
        if not self.by_epoch:
            return Due()
        return Due(
            validate=epochs_done % self.val_interval == 0,
            checkpoint=epochs_done % self.checkpoint_interval == 0 or last,
        )

    @staticmethod
    def at_end(iteration: int, *, validated_at: int, saved_at: int) -> Due:
        """Due when training ends: what the final weights still lack."""
        return Due(validate=validated_at != iteration, checkpoint=saved_at != iteration)
