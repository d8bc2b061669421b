"""The run's checkpoints: what a training checkpoint holds, when the last
one was written, the best one by a metric, and resuming from one.

The files themselves (names, ``keep``, ``latest.json``, atomic writes) are
:class:`detcore.engine.checkpoint.CheckpointFiles`; this module decides what
goes into them and how a run is restored from them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from detcore.engine import dist
from detcore.errors import CheckpointError, shorten

__all__ = ["RunCheckpointer"]


class RunCheckpointer:
    """Saves and restores one runner's full state (model, optimizer, LR
    schedule, scaler, RNG, sampler position, hook state).

    ``saved_at``: the iteration of the last checkpoint written or resumed
    from (``-1``: none yet). ``best``: ``{"metric", "value", "checkpoint",
    "iter", "epoch"}`` of the best checkpoint, or ``None``. ``resume_path``:
    the checkpoint this run resumes from, known before the model is built
    (which then skips its pretrained weights).
    """

    def __init__(self, runner) -> None:
        self.runner = runner
        self.saved_at = -1
        self.best: dict | None = None
        self.resume_path: str | None = None
        self._warned_best = False

    # -- what a checkpoint holds --------------------------------------

    def name(self) -> str:
        """``epoch_N.pth`` at an epoch boundary of an epoch-based run, else
        ``iter_N.pth``."""
        r = self.runner
        if r.cfg.train.by_epoch and r.batch_in_epoch == 0:
            return f"epoch_{r.epoch}.pth"
        return f"iter_{r.iter}.pth"

    def meta(self) -> dict:
        from detcore.engine.checkpoint import class_meta

        r = self.runner
        meta = {
            "epoch": r.epoch,
            "iter": r.iter,
            "max_iters": r.max_iters,
            "max_epochs": r.max_epochs,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seed": r.seed,
            "world_size": r.world_size,
            "model_type": str(r.cfg.model.get("type")),
            "run_file": r.resolved_toml,
            "best": dict(self.best) if self.best else None,
        }
        meta.update(class_meta(r.train_dataset))
        return meta

    def state(self) -> dict:
        """The checkpoint dict of the current position (hooks add theirs)."""
        from detcore.engine.checkpoint import new_checkpoint
        from detcore.engine.rng import get_rng_state

        r = self.runner
        ckpt = new_checkpoint(self.meta())
        ckpt["model"] = r.model.state_dict()
        # The weights validation used (an EMA, say) are what test, predict
        # and export should evaluate; resume restores "model" itself.
        val_model = r.pm.hook.detcore_val_model(runner=r)
        if val_model is not None and val_model is not r.model:
            eval_state = val_model.state_dict()
            # Only a module of the same architecture can stand in for "model".
            if eval_state.keys() == ckpt["model"].keys():
                ckpt["eval_model"] = eval_state
        ckpt["optimizer"] = r.optimizer.state_dict()
        ckpt["lr_scheduler"] = r.lr_scheduler.state_dict()
        ckpt["scaler"] = r.scaler.state_dict() if r.scaler is not None else None
        ckpt["rng"] = get_rng_state()
        sampler = r.train_loader.batch_sampler
        ckpt["sampler"] = {
            "epoch": r.epoch,
            "start": r.batch_in_epoch,
            "seed": sampler.seed,
            "world_size": r.world_size,
            "batch_size": sampler.batch_size,
        }
        r.pm.hook.detcore_save_checkpoint(runner=r, checkpoint=ckpt)
        return ckpt

    # -- writing --------------------------------------------------------

    def save(self) -> Path:
        """Write the interval checkpoint for the current position (rank 0;
        every rank waits until the file is complete)."""
        from detcore.engine.checkpoint import CheckpointFiles

        r = self.runner
        # Every rank builds the state: save hooks may use collectives.
        ckpt = self.state()
        name = self.name()
        path = r.work_dir / name
        if r.is_main:
            CheckpointFiles(r.work_dir, r.cfg.checkpoint.keep).save(ckpt, name)
            r.logger.info("checkpoint saved: %s", path)
        dist.barrier()
        self.saved_at = r.iter
        return path

    def save_if_best(self, metrics: dict) -> None:
        """Write ``best_<metric>_<tag>.pth`` when ``checkpoint.save_best``
        improved (replacing the previous best file)."""
        from detcore.engine.checkpoint import CheckpointFiles, best_name

        r = self.runner
        key = r.cfg.checkpoint.save_best
        if not key:
            return
        if key not in metrics:
            if not self._warned_best:
                r.logger.warning(
                    "checkpoint.save_best = %r is not among the metrics (%s); no best checkpoint is kept",
                    key, ", ".join(metrics),
                )
                self._warned_best = True
            return
        value = float(metrics[key])
        greater = r.cfg.checkpoint.best_rule == "greater"
        if self.best is not None and math.isfinite(value):
            old = float(self.best["value"])
            if not (value > old if greater else value < old):
                return
        elif not math.isfinite(value):
            return
        tag = self.name().removesuffix(".pth")
        previous = self.best.get("checkpoint") if self.best else None
        name = best_name(key, tag)
        self.best = {"metric": key, "value": value, "checkpoint": name, "iter": r.iter, "epoch": r.epoch}
        ckpt = self.state()
        if r.is_main:
            CheckpointFiles(r.work_dir, r.cfg.checkpoint.keep).save_best(ckpt, key, tag, previous)
            r.logger.info("best %s %.4f: %s", key, value, r.work_dir / self.best["checkpoint"])
        dist.barrier()

    def latest_path(self) -> Path:
        """The newest interval checkpoint (``latest.json``), else the name
        the current position would have."""
        from detcore.engine.checkpoint import CheckpointFiles

        name = CheckpointFiles(self.runner.work_dir).pointer().get("checkpoint")
        return self.runner.work_dir / (name or self.name())

    # -- resuming -------------------------------------------------------

    def resolve_resume(self, resume_from: str | None) -> None:
        """Set ``resume_path`` from ``--resume PATH`` / ``--resume auto``."""
        from detcore.engine.checkpoint import find_resume

        r = self.runner
        self.resume_path = None
        if not resume_from:
            return
        if resume_from == "auto":
            path = None
            if r.is_main:
                found = find_resume(r.work_dir, log=r.logger.warning)
                path = str(found[0]) if found else None
            path = dist.broadcast_object(path)
            if path is None:
                r.logger.info("--resume auto: no checkpoint in %s, starting from scratch", r.work_dir)
            self.resume_path = path
        else:
            self.resume_path = resume_from

    def resume(self) -> None:
        """Restore the runner from ``resume_path`` (nothing when ``None``)."""
        from detcore.engine.checkpoint import (
            check_checkpoint_classes,
            check_checkpoint_model,
            is_detcore_checkpoint,
        )
        from detcore.engine.rng import set_rng_state
        from detcore.weights import read_checkpoint

        r = self.runner
        path = self.resume_path
        if path is None:
            return
        dist.barrier()
        ckpt = read_checkpoint(path)
        if not is_detcore_checkpoint(ckpt):
            raise CheckpointError(
                f"'{path}' is not a detcore training checkpoint (no 'detcore'/'meta' entries), so it cannot be "
                f"resumed from; to start from its weights use --load-from {path}"
            )
        check_checkpoint_model(ckpt, r.run, str(path))
        check_checkpoint_classes(ckpt, r.train_dataset, split="train", name=str(path))
        try:
            r.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint '{path}' does not fit the model of {r.run.path}: "
                f"{shorten(' '.join(str(exc).split()), 600)}. Resume with the run file it was trained with."
            ) from None
        try:
            r.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint '{path}': the optimizer state does not fit this run's optimizer ({exc}); was "
                f"[optimizer] or the model changed?"
            ) from None
        r.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if r.scaler is not None and ckpt.get("scaler"):
            r.scaler.load_state_dict(ckpt["scaler"])
        meta = ckpt["meta"]
        r.epoch, r.iter = int(meta["epoch"]), int(meta["iter"])
        self.best = meta.get("best")
        r.batch_in_epoch = self._sampler_position(ckpt.get("sampler") or {"epoch": r.epoch, "start": 0})
        set_rng_state(ckpt["rng"])
        r.pm.hook.detcore_load_checkpoint(runner=r, checkpoint=ckpt)
        self.saved_at = r.iter
        r.logger.info(
            "resumed from %s: epoch %d, iteration %d (batch %d of the epoch; earlier batches are skipped "
            "by index, not loaded)", path, r.epoch + 1, r.iter, r.batch_in_epoch,
        )
        dist.barrier()

    def _sampler_position(self, state: dict) -> int:
        """The batch of the epoch to continue from; the sampler's seed is
        restored. With another world size or batch size the position is
        the first batch not fully seen (approximate: warned)."""
        r = self.runner
        start = int(state.get("start", 0))
        sampler = r.train_loader.batch_sampler
        if "seed" in state:
            sampler.seed = int(state["seed"])
        old_ws, old_bs = state.get("world_size", r.world_size), state.get("batch_size", sampler.batch_size)
        if start and (old_ws, old_bs) != (r.world_size, sampler.batch_size):
            seen = start * old_ws * old_bs
            start = min(math.ceil(seen / (r.world_size * sampler.batch_size)), len(sampler))
            r.logger.warning(
                "the checkpoint was written with %d process(es) x batch %d and this run uses %d x %d: the "
                "position in epoch %d is approximated (batch %d)", old_ws, old_bs, r.world_size,
                sampler.batch_size, r.epoch + 1, start,
            )
        return start
