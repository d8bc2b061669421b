"""The runner: one training run from a validated run file.

``Runner(run, ...).train()`` sets up (distributed process group, logging,
seeds, data, model, optimizer, schedule, hooks, resume), then trains: each
epoch is a pass over the loader, each micro-batch one call of
:meth:`TrainStep.forward_backward <detcore.engine.step.TrainStep>` and each
group of them one optimizer step; after a step and after an epoch the
:class:`~detcore.engine.schedule.Schedule` says whether logging, validation
or a checkpoint is due. An iteration-based run is a sequence of passes that
stops at ``max_iters``. Runtime hooks are called through the plugin manager
exactly as :mod:`detcore.hookspecs` documents; the attributes listed there
are the runner's public surface.

The parts live next to it: :mod:`~detcore.engine.step` (autocast,
accumulation, DDP ``no_sync``, loss scaling, clipping, optimizer and LR
step), :mod:`~detcore.engine.schedule` (what is due when),
:mod:`~detcore.engine.checkpointer` (checkpoint contents, best checkpoint,
resume), :mod:`~detcore.engine.signals` (SIGTERM/SIGINT),
:mod:`~detcore.engine.train_log` (the log line) and
:mod:`~detcore.engine.batches` (batches to the device).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

from detcore.data.mixing import epoch_dependent, epochs_of, set_dataset_epoch
from detcore.engine import dist, workdir
from detcore.engine.batches import batch_to_device, target_to_device  # noqa: F401 - target_to_device: its old home
from detcore.engine.checkpointer import RunCheckpointer
from detcore.engine.disk import DiskFullError, writing
from detcore.engine.logger import FILE_ONLY
from detcore.engine.schedule import Due, Schedule
from detcore.engine.signals import Interrupted, StopSignals, resume_hint
from detcore.engine.step import NonFiniteLoss, TrainStep, accumulation_group
from detcore.engine.train_log import TrainLog, fmt_time
from detcore.errors import DetcoreError, RunFileError

__all__ = ["Runner", "TrainingDiverged", "Interrupted"]


class TrainingDiverged(DetcoreError):
    """The loss became NaN or infinite."""

    exit_code = 1


class Runner:
    """See the module docstring and :mod:`detcore.hookspecs` (runner attributes)."""

    def __init__(
        self,
        run,
        *,
        resume: str | None = None,
        no_validate: bool = False,
        launcher: str | None = None,
        argv: list[str] | None = None,
    ):
        self.run = run
        self.cfg = run.cfg
        self.pm = run.pm
        self.work_dir = Path(run.work_dir)
        self.resume_from = resume
        self.no_validate = no_validate
        self.launcher = launcher
        self.argv = list(argv) if argv is not None else None
        # The hook-facing attributes (detcore.hookspecs).
        self.model = None
        self.optimizer = None
        self.lr_scheduler = None
        self.epoch = 0
        self.iter = 0
        self.max_epochs = self.cfg.train.max_epochs
        self.max_iters = self.cfg.train.max_iters
        self.rank, self.world_size, self.is_main = 0, 1, True
        self.device = None
        self.train_loader = None
        self.val_dataset = None
        self.class_names: list[str] = []
        self.logger = None
        self.stop_training = False
        # train.max_time: the budget (seconds) of this process's training
        # loop, and with stretch_schedule how many times longer than the
        # configured schedule the run is now expected to be.
        self.max_time_s = self.cfg.train.max_time_s
        self._schedule_iters = None
        self._stretch = 1.0
        self._time_stopped = False
        # Internal state.
        self.metrics: list = []
        self.last_metrics: dict[str, float] = {}
        self.scaler = None
        self.train_model = None
        self.train_dataset = None
        self.seed = 0
        self.iters_per_epoch = 1
        self.batch_in_epoch = 0  # batches of the current epoch done at the last optimizer step
        self.checkpointer = RunCheckpointer(self)
        self.signals = StopSignals()
        self.schedule: Schedule | None = None
        self.step: TrainStep | None = None
        self._train_log: TrainLog | None = None
        self._pending_scalars: dict = {}
        self._hook_names: list[str] = []
        self._scalars = None
        self._last_val_iter = -1
        self._restore = []

    # ------------------------------------------------------------------
    # public helpers for hooks
    # ------------------------------------------------------------------

    def log_scalars(self, values: dict) -> None:
        """Add ``values`` to the next line of ``scalars.jsonl``."""
        self._pending_scalars.update(values)

    @property
    def total_batch_size(self) -> int:
        return self.cfg.data.batch_size * self.world_size * self.cfg.train.accumulate

    @property
    def best(self) -> dict | None:
        """The best checkpoint so far (``checkpoint.save_best``), or ``None``."""
        return self.checkpointer.best

    def save_checkpoint(self) -> Path:
        """Write the interval checkpoint for the current position (rank 0;
        every rank waits until the file is complete)."""
        return self.checkpointer.save()

    # ------------------------------------------------------------------
    # setup
    # ------------------------------------------------------------------

    def _setup_process(self) -> None:
        cfg = self.cfg
        info, device = dist.init_distributed(self.launcher, cfg.dist.backend, cfg.device, cfg.dist.timeout_s)
        self.dist_info = info
        self.rank, self.world_size, self.is_main = info.rank, info.world_size, info.is_main
        self.device = device

        from detcore.engine.logger import (
            FILE_ONLY,
            ScalarWriter,
            environment,
            environment_summary,
            format_environment,
            setup_logger,
        )

        # One live run per work dir, never over another run's files.
        with writing(self.work_dir / workdir.LOCK_NAME, "the work dir's lock file"):
            claim = workdir.take(self.work_dir, resume=self.resume_from, is_main=self.is_main)
        self._restore.append(claim.release)
        stamp = time.strftime("%Y%m%d_%H%M%S")
        self.logger, self.log_file = setup_logger(self.work_dir, stamp, is_main=self.is_main, rank=self.rank)
        self._scalars = ScalarWriter(self.work_dir / "scalars.jsonl" if self.is_main else None)
        env = environment(self.pm)
        env["world_size"] = self.world_size
        env["launcher"] = info.launcher
        env["device"] = str(device)
        self.logger.info("detcore train %s -> work dir %s (log %s)", self.run.path, self.work_dir, self.log_file)
        # The full report (versions, GPUs, every plugin) is for the log file;
        # the console gets one line.
        self.logger.info(format_environment(env), extra=FILE_ONLY)
        self.logger.info("%s (all of it in the log file)", environment_summary(env))
        for warning in getattr(self.run, "warnings", ()):
            self.logger.warning("run file: %s", warning)
        claim.report(self.logger)
        if self.is_main:
            from detcore.runfile import resolved_dict
            from detcore.runfile.toml_writer import dumps

            self.resolved_toml = dumps(resolved_dict(cfg, self.run.catalog))
            for name, text in (("resolved.toml", self.resolved_toml), ("env.json", json.dumps(env, indent=1))):
                with writing(self.work_dir / name, "file", len(text.encode())):
                    (self.work_dir / name).write_text(text)
            self.logger.info("resolved run file written to %s", self.work_dir / "resolved.toml")
        else:
            self.resolved_toml = ""

    def _setup_seed(self) -> None:
        import random

        import numpy as np
        import torch

        seed = self.cfg.seed
        if seed is None:
            seed = dist.broadcast_object(random.SystemRandom().randrange(2**31))
            self.logger.info("seed not set: using %d", seed)
        self.seed = int(seed)
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)
        if self.cfg.train.deterministic:
            prev = (
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic,
                torch.backends.cudnn.benchmark,
            )
            self._restore.append(lambda: self._restore_determinism(prev))
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # warn_only: an op without a deterministic kernel warns rather than
            # ending the run (torchvision's roi_align backward on CUDA).
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
            self.logger.info("deterministic: torch.use_deterministic_algorithms(True), cudnn.deterministic")

    @staticmethod
    def _restore_determinism(prev) -> None:
        import torch

        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[2], prev[3]

    def _setup_data(self) -> None:
        from detcore.data.loader import build_train_loader
        from detcore.engine.build import build_dataset, build_metrics

        cfg = self.cfg
        if cfg.data.train is None:
            raise RunFileError(
                "training needs a [data.train] table (a dataset with type = \"...\")",
                file=str(self.run.path),
                key="data.train",
            )
        train = build_dataset(self.run, "train")
        if len(train) == 0:
            raise RunFileError("the training dataset is empty", file=self.run.raw.file_of("data.train"), key="data.train")
        self.train_dataset = train
        if cfg.data.persistent_workers and cfg.data.workers > 0 and epoch_dependent(train):
            raise RunFileError(
                "the training dataset changes with the epoch (multi_image_mix with close_last_epochs), "
                "but persistent loader workers keep the copy of the first epoch; set "
                "data.persistent_workers = false (or close_last_epochs = 0)",
                file=self.run.raw.file_of("data.persistent_workers"),
                key="data.persistent_workers",
            )
        self.class_names = list(getattr(train, "class_names", []))
        self.train_loader = build_train_loader(
            train,
            batch_size=cfg.data.batch_size,
            workers=cfg.data.workers,
            seed=self.seed,
            rank=self.rank,
            world_size=self.world_size,
            aspect_ratio_grouping=cfg.data.aspect_ratio_grouping,
            pin_memory=cfg.data.pin_memory,
            persistent_workers=cfg.data.persistent_workers,
        )
        batches = len(self.train_loader.batch_sampler)
        self.iters_per_epoch = math.ceil(batches / cfg.train.accumulate)
        if cfg.train.by_epoch:
            self.max_iters = self.max_epochs * self.iters_per_epoch
        self.logger.info(
            "train: %s, %d images, %d classes %s; %d iterations per epoch (batch %d x %d process(es) x "
            "accumulate %d), %s",
            train, len(train), len(self.class_names), self.class_names, self.iters_per_epoch,
            cfg.data.batch_size, self.world_size, cfg.train.accumulate,
            f"{self.max_epochs} epochs" if cfg.train.by_epoch else f"{self.max_iters} iterations",
        )
        if cfg.data.val is not None and not self.no_validate:
            self.metrics = build_metrics(self.run)
            if not self.metrics:
                self.logger.warning("[data.val] is set but there are no [[metrics]]: validation is skipped")
            else:
                self.val_dataset = build_dataset(self.run, "val")
                self.logger.info("val: %s, %d images", self.val_dataset, len(self.val_dataset))
        elif self.no_validate:
            self.logger.info("--no-validate: validation is skipped")

    def _setup_model(self) -> None:
        from detcore.engine.build import build_model, wrap_model
        from detcore.models.pretrained import skip_pretrained
        from detcore.weights import load_weights

        cfg = self.cfg
        # When every weight is overwritten right after building, the model's
        # own `weights` (a COCO or ImageNet file) need not be present.
        overwritten = self.checkpointer.resume_path is not None or cfg.load_from
        with skip_pretrained() if overwritten else contextlib.nullcontext():
            model = build_model(self.run)
        if getattr(model, "weights_report", None) is not None:  # detector `weights` (e.g. COCO_V1)
            self.logger.info(model.weights_report.summary())
        n = cfg.model.get("num_classes")
        if isinstance(n, int) and self.class_names and n < len(self.class_names):
            raise RunFileError(
                f"model.num_classes = {n} but the training dataset has {len(self.class_names)} classes "
                f"{self.class_names}; set num_classes = {len(self.class_names)}",
                file=self.run.raw.file_of("model.num_classes"),
                key="model.num_classes",
            )
        if isinstance(n, int) and self.class_names and n > len(self.class_names):
            self.logger.warning(
                "model.num_classes = %d but the training dataset has %d classes; the extra outputs are never trained",
                n, len(self.class_names),
            )
        if cfg.load_from and self.checkpointer.resume_path is None:
            report = load_weights(model, cfg.load_from)
            self.logger.info(report.summary())
        elif cfg.load_from:
            self.logger.info("load_from %s is ignored: the run resumes", cfg.load_from)
        model.to(self.device)
        model.train()
        self.model, self.train_model = wrap_model(model, self.dist_info, cfg.dist, self.device)

    def _setup_optim(self) -> None:
        from detcore.engine.amp import check_amp, make_scaler
        from detcore.engine.lr_schedule import LRSchedule, lr_factor_fn
        from detcore.engine.optim import build_optimizer, scaled_lr

        cfg = self.cfg
        lr = cfg.optimizer.lr
        if cfg.auto_scale_lr.enable:
            new = scaled_lr(lr, cfg.data.batch_size, self.world_size, cfg.auto_scale_lr.base_batch_size, cfg.train.accumulate)
            self.logger.info(
                "auto-scale-lr: lr %g -> %g (global batch %d = %d per process x %d process(es) x accumulate %d; "
                "base_batch_size %d)",
                lr, new, self.total_batch_size, cfg.data.batch_size, self.world_size, cfg.train.accumulate,
                cfg.auto_scale_lr.base_batch_size,
            )
            lr = new
        self.base_lr = lr
        self.optimizer = build_optimizer(self.model, cfg.optimizer, lr)
        self._schedule_iters = self.max_iters
        stretch = (lambda: self._stretch) if cfg.train.stretch_schedule else None
        self.lr_scheduler = LRSchedule(
            self.optimizer, lr_factor_fn(cfg.lr_schedule, self.max_iters, self.iters_per_epoch, stretch)
        )
        check_amp(cfg.train.amp, self.device)
        self.scaler = make_scaler(cfg.train.amp, self.device)
        self.step = TrainStep(
            self.train_model, self.optimizer, self.lr_scheduler, self.scaler,
            amp=cfg.train.amp, device=self.device, grad_clip=cfg.train.grad_clip,
            ddp=self.train_model is not self.model,
        )
        self.schedule = Schedule.from_config(cfg)
        groups = ", ".join(
            f"{g['name']} ({len(g['params'])} tensors, lr x{g['lr_mult']:g}, wd {g['weight_decay']:g})"
            for g in self.optimizer.param_groups
        )
        self.logger.info("optimizer %s lr %g: %s", cfg.optimizer.type, lr, groups)

    def _setup_hooks(self) -> None:
        from detcore.engine.build import build_hooks
        from detcore.engine.progress import Progress
        from detcore.errors import PluginError

        for (name, hook), table in zip(build_hooks(self.run), self.cfg.hooks):
            comp = self.run.catalog.get("runner_hook", table["type"])
            # register_origin: a hook method with a wrong argument name is a
            # PluginError naming the distribution, not pluggy's traceback.
            self.pm.register_origin(hook, name, comp.distribution, comp.version)
            if self.pm.get_plugin(name) is None:  # a lenient manager only records the problem
                raise PluginError(" ".join(self.pm.problems.get(name, [f"runner hook '{name}' could not be registered"])))
            self._hook_names.append(name)
        configured = [self.run.catalog.get("runner_hook", t["type"]) for t in self.cfg.hooks]
        if not any((c.plugin, c.name) == ("detcore.hooks", "progress") for c in configured):
            # Every run shows its progress; a [[hooks]] progress table only changes how.
            self.pm.register(Progress(), name="runner-hook:progress")
            self._hook_names.append("runner-hook:progress")
        self.pm.check_hooks()

    # ------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------

    def train(self) -> int:
        """Run training; the exit status (0, or 143/130 after SIGTERM/SIGINT)."""
        try:
            self._setup_process()
            self._setup_seed()
            self._setup_data()
            self.checkpointer.resolve_resume(self.resume_from)
            self._setup_model()
            self._setup_optim()
            self._setup_hooks()
            self.checkpointer.resume()
            self._restore += self.signals.install(self._on_signal)
            self.pm.hook.detcore_before_run(runner=self)
            return self._loop()
        except TrainingDiverged as exc:
            if self.logger is not None:
                self.logger.error("%s", exc)
            raise
        except DiskFullError as exc:
            # Name what survived: checkpoints are renamed into place complete.
            from detcore.engine.checkpoint import CheckpointFiles

            found = CheckpointFiles(self.work_dir).candidates() if self.is_main else []
            exc.intact, exc.checked_intact = (found[0] if found else None), self.is_main
            if found:
                exc.resume_hint = resume_hint(found[0], run_path=self.run.path, argv=self.argv, world_size=self.world_size)
            if self.logger is not None:  # the console gets it once, from the CLI
                self.logger.error("%s", exc, extra=FILE_ONLY)
            raise
        finally:
            self._teardown()

    def _loop(self) -> int:
        sampler = self.train_loader.batch_sampler
        start = self.batch_in_epoch
        self._train_log = TrainLog(self.iter, self._scalars)
        self._loop_start, self._loop_start_iter = time.monotonic(), self.iter
        if self.max_time_s is not None:
            self.logger.info("time budget: %s (train.max_time = %r)%s", fmt_time(self.max_time_s),
                             self.cfg.train.max_time,
                             "; the LR schedule is stretched over it" if self.cfg.train.stretch_schedule else "")
        while not self._done() and not self.stop_training:
            sampler.set_epoch(self.epoch, start)
            set_dataset_epoch(self.train_dataset, self.epoch,
                              epochs_of(self.max_epochs, self.max_iters, self.iters_per_epoch))
            self.batch_in_epoch = start
            self.pm.hook.detcore_before_train_epoch(runner=self, epoch=self.epoch)
            try:
                epoch_ended = self._train_epoch(start)
            except Interrupted:
                return self._stop_on_signal()
            except KeyboardInterrupt:
                raise
            except Exception:
                if self.signals.received is not None:  # e.g. DataLoader workers killed by the same Ctrl-C
                    return self._stop_on_signal()
                raise
            start = 0
            if epoch_ended:
                self.pm.hook.detcore_after_train_epoch(runner=self, epoch=self.epoch)
                self.epoch += 1
                self.batch_in_epoch = 0
                self._run_due(self.schedule.after_epoch(self.epoch, last=self._done()))
        due = self.schedule.at_end(self.iter, validated_at=self._last_val_iter, saved_at=self.checkpointer.saved_at)
        self._run_due(due)
        self.pm.hook.detcore_after_run(runner=self)
        # The last validation's table is already on screen: name the
        # checkpoints to use instead of printing it again.
        best = self.best
        kept = f"; best {best['metric']} {best['value']:.4f}: {self.work_dir / best['checkpoint']}" if best else ""
        self.logger.info(
            "training done: %d iterations in %s; last checkpoint %s%s",
            self.iter, fmt_time(self._train_log.elapsed()), self.checkpointer.latest_path(), kept,
        )
        return 0

    def _train_epoch(self, start: int) -> bool:
        """Train over the rest of the epoch from batch ``start``; ``True``
        when the epoch was completed (``False``: stopped inside it)."""
        accumulate = self.cfg.train.accumulate
        n_batches = len(self.train_loader.batch_sampler)
        t_prev = time.perf_counter()
        for b, (images, targets) in enumerate(self.train_loader, start=start):
            t_data = time.perf_counter()
            batch = batch_to_device(images, targets, self.device)
            group_size, step_now = accumulation_group(b, start, accumulate, n_batches)
            iteration = self.iter
            self.pm.hook.detcore_before_train_iter(runner=self, iteration=iteration, batch=batch)
            try:
                losses = self.step.forward_backward(*batch, group_size=group_size, sync=step_now)
            except NonFiniteLoss as exc:
                raise self._diverged(iteration, exc) from None
            if step_now:
                self.step.optimizer_step(self.iter)
                self.iter += 1
                self.batch_in_epoch = b + 1
            t_end = time.perf_counter()
            self._train_log.add(losses, time=t_end - t_prev, data_time=t_data - t_prev)
            t_prev = t_end
            self.pm.hook.detcore_after_train_iter(runner=self, iteration=iteration, losses=losses)
            if not step_now:
                continue
            if self.cfg.train.stretch_schedule and self.iter % self.cfg.train.log_interval == 0:
                self._fit_schedule_to_time()
            self._run_due(self.schedule.after_step(self.iter, last=self._done()))
            if self._stop_requested() or self._done():
                return self.batch_in_epoch >= n_batches
            t_prev = time.perf_counter()
        return True

    def _run_due(self, due: Due) -> None:
        """Log, validate and checkpoint, as far as ``due`` says."""
        if due.log:
            self._train_log.flush(self, grad_norm=self.step.grad_norm, extra=self._pending_scalars)
            self._pending_scalars = {}
        if due.validate and self.val_dataset is not None:
            self.validate()
        if due.checkpoint:
            self.checkpointer.save()

    def _done(self) -> bool:
        return self.iter >= self.max_iters

    def _time_up(self) -> bool:
        return self.max_time_s is not None and time.monotonic() - self._loop_start >= self.max_time_s

    def _fit_schedule_to_time(self) -> None:
        """``stretch_schedule``: the run's length becomes the iterations
        expected to fit in the budget at the speed so far, and the LR
        schedule is stretched to it. Every rank takes the largest estimate of
        all ranks, so all use the same LR and stop together."""
        done = self.iter - self._loop_start_iter
        elapsed = time.monotonic() - self._loop_start
        if done <= 0 or elapsed <= 0:
            return
        expected = self._loop_start_iter + int(done * self.max_time_s / elapsed)
        if self.world_size > 1:
            expected = dist.max_over_ranks([expected])[0]
        self.max_iters = max(expected, self.iter + 1)
        self._stretch = self.max_iters / max(self._schedule_iters, 1)

    def _stop_requested(self) -> bool:
        """After a step: has a signal or ``stop_training`` asked to stop?
        In a distributed run every rank stops at the same iteration: one
        rank's request (signals reach ranks at different moments) stops
        all, so none is left waiting in a collective."""
        if not self.stop_training and self._time_up():
            self.stop_training = self._time_stopped = True
        if self.world_size > 1:
            sig, stop = dist.max_over_ranks([int(self.signals.received or 0), int(bool(self.stop_training))])
            if sig and self.signals.received is None:
                self.signals.received = sig
            self.stop_training = bool(stop)
        if self.signals.received is not None:
            raise Interrupted
        if self.stop_training and self._time_stopped:
            self.logger.info("time budget %s (train.max_time) used up at iteration %d: validating, saving "
                             "and stopping", fmt_time(self.max_time_s), self.iter)
        elif self.stop_training:
            self.logger.info("stop_training set at iteration %d: saving and stopping", self.iter)
        return self.stop_training

    def _raise_if_signalled(self) -> None:
        """While waiting for other ranks in validation: a SIGTERM (the launcher
        stopping the job because a rank died) stops here, saving a checkpoint."""
        if self.signals.received is not None:
            raise Interrupted

    def _on_signal(self, signum: int) -> None:
        if self.logger is not None and self.is_main:
            self.logger.warning(
                "%s received: finishing the current iteration, then saving a checkpoint", self.signals.name
            )

    def _stop_on_signal(self) -> int:
        """Save (unless this iteration is saved), say how to resume, and
        return the signal's exit status."""
        if self.checkpointer.saved_at != self.iter:
            path = self.checkpointer.save()
        else:
            path = self.checkpointer.latest_path()
        self.logger.warning(
            "stopped by %s at iteration %d (epoch %d); checkpoint: %s\nresume with: %s",
            self.signals.name, self.iter, self.epoch + 1, path,
            resume_hint(path, run_path=self.run.path, argv=self.argv, world_size=self.world_size),
        )
        self.pm.hook.detcore_after_run(runner=self)
        return self.signals.exit_status

    def _diverged(self, iteration: int, exc: NonFiniteLoss) -> TrainingDiverged:
        terms = ", ".join(f"{k}={float(v.detach()):.6g}" for k, v in exc.losses.items())
        if not exc.here:
            terms = f"on another rank (this rank's: {terms})"
        latest = self.checkpointer.latest_path() if self.checkpointer.saved_at >= 0 else None
        where = (
            f"The last good checkpoint is {latest} (left untouched)"
            if latest is not None and latest.exists()
            else "No checkpoint was written before it"
        )
        return TrainingDiverged(
            f"the loss is not finite at iteration {iteration} (epoch {self.epoch + 1}): {terms}. Training "
            f"stopped without saving. {where}. Lower optimizer.lr, add warmup (lr_schedule.warmup_iters), "
            f"set train.grad_clip, or check the data of this batch."
        )

    def _teardown(self) -> None:
        for name in self._hook_names:
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)
        self._hook_names = []
        for fn in reversed(self._restore):
            fn()
        self._restore = []
        if self._scalars is not None:
            self._scalars.close()
        if self.logger is not None:
            from detcore.engine.logger import close_logger

            close_logger(self.logger)

    # ------------------------------------------------------------------
    # validation
    # ------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        """Evaluate the validation model (``detcore_val_model``, else the
        model) on the validation set; log and return the metrics."""
        from detcore.engine.evaluation import RecordedMetric, evaluate, format_summaries

        model = self.pm.hook.detcore_val_model(runner=self) or self.model
        self.pm.hook.detcore_before_val_epoch(runner=self)
        t0 = time.perf_counter()

        def on_batch(batch, outputs):
            self.pm.hook.detcore_after_val_iter(runner=self, batch=batch, outputs=outputs)

        # Each metric's own results, for its own summary table in the log.
        recorded = [RecordedMetric(m) for m in self.metrics]
        metrics = evaluate(
            model,
            self.val_dataset,
            recorded,
            device=self.device,
            batch_size=self.cfg.data.val_batch_size or self.cfg.data.batch_size,
            workers=self.cfg.data.workers,
            amp=self.cfg.train.amp,
            eval_timeout_s=self.cfg.dist.eval_timeout_s,
            on_batch=on_batch,
            check_stop=self._raise_if_signalled,
            what="validation",
        )
        self.last_metrics = metrics
        self._last_val_iter = self.iter
        if self.is_main:
            self._scalars.write({"mode": "val", "epoch": self.epoch, "iter": self.iter, **metrics})
            where = f"epoch {self.epoch}" if self.cfg.train.by_epoch else f"iteration {self.iter}"
            self.logger.info(
                "validation after %s (%.1fs):\n%s", where, time.perf_counter() - t0, format_summaries(recorded)
            )
        self.pm.hook.detcore_after_val_epoch(runner=self, metrics=metrics)
        self.checkpointer.save_if_best(metrics)
        return metrics
