"""The runner: one training run from a validated run file.

``Runner(run, ...).train()`` sets up (distributed process group, logging,
seeds, data, model, optimizer, schedule, hooks, resume), trains epoch by
epoch (an iteration-based run is a sequence of passes over the loader that
stops at ``max_iters``), validates and checkpoints at their intervals, and
returns the exit status. Runtime hooks are called through the plugin
manager exactly as :mod:`detcore.hookspecs` documents; the attributes listed
there are the runner's public surface.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from detcore.engine import dist
from detcore.errors import CheckpointError, DetcoreError, RunFileError

__all__ = ["Runner", "TrainingDiverged", "Interrupted"]


class TrainingDiverged(DetcoreError):
    """The loss became NaN or infinite."""

    exit_code = 1


class Interrupted(Exception):
    """Raised inside the loop when SIGTERM/SIGINT asked the run to stop."""


_SIGNAL_EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130}


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}d " if d else "") + f"{h}:{m:02d}:{s:02d}"


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
        # Internal state.
        self.metrics: list = []
        self.last_metrics: dict[str, float] = {}
        self.best: dict | None = None
        self.scaler = None
        self.train_model = None
        self.seed = 0
        self.iters_per_epoch = 1
        self._batch_in_epoch = 0  # batches of the current epoch done at the last optimizer step
        self._pending_scalars: dict = {}
        self._signal: int | None = None
        self._hook_names: list[str] = []
        self._scalars = None
        self._files = None
        self._last_saved_iter = -1
        self._last_val_iter = -1
        self._warned_best = False
        self._clip_params: list | None = None
        self._train_dataset = None
        self._resume_path: str | None = None
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
            ScalarWriter,
            environment,
            format_environment,
            setup_logger,
        )

        if self.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        stamp = time.strftime("%Y%m%d_%H%M%S")
        self.logger, self.log_file = setup_logger(self.work_dir, stamp, is_main=self.is_main, rank=self.rank)
        self._scalars = ScalarWriter(self.work_dir / "scalars.jsonl" if self.is_main else None)
        env = environment(self.pm)
        env["world_size"] = self.world_size
        env["launcher"] = info.launcher
        env["device"] = str(device)
        self.logger.info("detcore train %s -> work dir %s (log %s)", self.run.path, self.work_dir, self.log_file)
        self.logger.info(format_environment(env))
        if self.is_main:
            from detcore.runfile import resolved_dict
            from detcore.runfile.toml_writer import dumps

            self.resolved_toml = dumps(resolved_dict(cfg))
            (self.work_dir / "resolved.toml").write_text(self.resolved_toml)
            (self.work_dir / "env.json").write_text(json.dumps(env, indent=1))
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
        self._train_dataset = train
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
        from detcore.engine.checkpoint import load_weights
        from detcore.models.pretrained import skip_pretrained

        cfg = self.cfg
        # When every weight is overwritten right after building, the model's
        # own `weights` (a COCO or ImageNet file) need not be present.
        overwritten = self._resume_path is not None or cfg.load_from
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
        if cfg.load_from and self._resume_path is None:
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
        self.lr_scheduler = LRSchedule(self.optimizer, lr_factor_fn(cfg.lr_schedule, self.max_iters, self.iters_per_epoch))
        check_amp(cfg.train.amp, self.device)
        self.scaler = make_scaler(cfg.train.amp, self.device)
        groups = ", ".join(
            f"{g['name']} ({len(g['params'])} tensors, lr x{g['lr_mult']:g}, wd {g['weight_decay']:g})"
            for g in self.optimizer.param_groups
        )
        self.logger.info("optimizer %s lr %g: %s", cfg.optimizer.type, lr, groups)

    def _setup_hooks(self) -> None:
        from detcore.engine.build import build_hooks
        from detcore.errors import PluginError

        for (name, hook), table in zip(build_hooks(self.run), self.cfg.hooks):
            comp = self.run.catalog.get("runner_hook", table["type"])
            # register_origin: a hook method with a wrong argument name is a
            # PluginError naming the distribution, not pluggy's traceback.
            self.pm.register_origin(hook, name, comp.distribution, comp.version)
            if self.pm.get_plugin(name) is None:  # a lenient manager only records the problem
                raise PluginError(" ".join(self.pm.problems.get(name, [f"runner hook '{name}' could not be registered"])))
            self._hook_names.append(name)
        self.pm.check_hooks()

    # ------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------

    def _meta(self) -> dict:
        from detcore.engine.checkpoint import class_meta

        meta = {
            "epoch": self.epoch,
            "iter": self.iter,
            "max_iters": self.max_iters,
            "max_epochs": self.max_epochs,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seed": self.seed,
            "world_size": self.world_size,
            "model_type": str(self.cfg.model.get("type")),
            "run_file": self.resolved_toml,
            "best": dict(self.best) if self.best else None,
        }
        meta.update(class_meta(self._train_dataset))
        return meta

    def _state(self) -> dict:
        from detcore.engine.checkpoint import get_rng_state, new_checkpoint

        ckpt = new_checkpoint(self._meta())
        ckpt["model"] = self.model.state_dict()
        # The weights validation used (an EMA, say) are what test, predict
        # and export should evaluate; resume restores "model" itself.
        val_model = self.pm.hook.detcore_val_model(runner=self)
        if val_model is not None and val_model is not self.model:
            eval_state = val_model.state_dict()
            # Only a module of the same architecture can stand in for "model".
            if eval_state.keys() == ckpt["model"].keys():
                ckpt["eval_model"] = eval_state
        ckpt["optimizer"] = self.optimizer.state_dict()
        ckpt["lr_scheduler"] = self.lr_scheduler.state_dict()
        ckpt["scaler"] = self.scaler.state_dict() if self.scaler is not None else None
        ckpt["rng"] = get_rng_state()
        sampler = self.train_loader.batch_sampler
        ckpt["sampler"] = {
            "epoch": self.epoch,
            "start": self._batch_in_epoch,
            "seed": sampler.seed,
            "world_size": self.world_size,
            "batch_size": sampler.batch_size,
        }
        self.pm.hook.detcore_save_checkpoint(runner=self, checkpoint=ckpt)
        return ckpt

    def _checkpoint_name(self) -> str:
        if self.cfg.train.by_epoch and self._batch_in_epoch == 0:
            return f"epoch_{self.epoch}.pth"
        return f"iter_{self.iter}.pth"

    def save_checkpoint(self) -> Path:
        """Write the interval checkpoint for the current position (rank 0;
        every rank waits until the file is complete)."""
        from detcore.engine.checkpoint import CheckpointFiles

        # Every rank builds the state: save hooks may use collectives.
        ckpt = self._state()
        name = self._checkpoint_name()
        path = self.work_dir / name
        if self.is_main:
            files = CheckpointFiles(self.work_dir, self.cfg.checkpoint.keep)
            files.save(ckpt, name)
            self.logger.info("checkpoint saved: %s", path)
        dist.barrier()
        self._last_saved_iter = self.iter
        return path

    def _maybe_save_best(self, metrics: dict) -> None:
        from detcore.engine.checkpoint import CheckpointFiles, best_name

        key = self.cfg.checkpoint.save_best
        if not key:
            return
        if key not in metrics:
            if not self._warned_best:
                self.logger.warning(
                    "checkpoint.save_best = %r is not among the metrics (%s); no best checkpoint is kept",
                    key, ", ".join(metrics),
                )
                self._warned_best = True
            return
        value = float(metrics[key])
        greater = self.cfg.checkpoint.best_rule == "greater"
        if self.best is not None and math.isfinite(value):
            old = float(self.best["value"])
            if not (value > old if greater else value < old):
                return
        elif not math.isfinite(value):
            return
        tag = self._checkpoint_name().removesuffix(".pth")
        previous = self.best.get("checkpoint") if self.best else None
        name = best_name(key, tag)
        self.best = {"metric": key, "value": value, "checkpoint": name, "iter": self.iter, "epoch": self.epoch}
        ckpt = self._state()
        if self.is_main:
            CheckpointFiles(self.work_dir, self.cfg.checkpoint.keep).save_best(ckpt, key, tag, previous)
            self.logger.info("best %s %.4f: %s", key, value, self.work_dir / self.best["checkpoint"])
        dist.barrier()

    def _resolve_resume(self) -> None:
        """``self._resume_path``: the checkpoint to resume from, or ``None``
        (known before the model is built, which then skips its pretrained
        weights)."""
        from detcore.engine.checkpoint import find_resume

        self._resume_path = None
        if not self.resume_from:
            return
        if self.resume_from == "auto":
            path = None
            if self.is_main:
                found = find_resume(self.work_dir, log=self.logger.warning)
                path = str(found[0]) if found else None
            path = dist.broadcast_object(path)
            if path is None:
                self.logger.info("--resume auto: no checkpoint in %s, starting from scratch", self.work_dir)
            self._resume_path = path
        else:
            self._resume_path = self.resume_from

    def _resume(self) -> None:
        from detcore.engine.checkpoint import (
            check_checkpoint_classes,
            is_detcore_checkpoint,
            read_checkpoint,
            set_rng_state,
        )

        path = self._resume_path
        if path is None:
            return
        dist.barrier()
        ckpt = read_checkpoint(path)
        if not is_detcore_checkpoint(ckpt):
            raise CheckpointError(
                f"'{path}' is not a detcore training checkpoint (no 'detcore'/'meta' entries), so it cannot be "
                f"resumed from; to start from its weights use --load-from {path}"
            )
        check_checkpoint_classes(ckpt, self._train_dataset, split="train", name=str(path))
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint '{path}' does not fit the model of {self.run.path}: "
                f"{' '.join(str(exc).split())[:600]}. Resume with the run file it was trained with."
            ) from None
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint '{path}': the optimizer state does not fit this run's optimizer ({exc}); was "
                f"[optimizer] or the model changed?"
            ) from None
        self.lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        meta = ckpt["meta"]
        self.epoch, self.iter = int(meta["epoch"]), int(meta["iter"])
        self.best = meta.get("best")
        sampler_state = ckpt.get("sampler") or {"epoch": self.epoch, "start": 0}
        start = int(sampler_state.get("start", 0))
        sampler = self.train_loader.batch_sampler
        if "seed" in sampler_state:
            sampler.seed = int(sampler_state["seed"])
        old_ws, old_bs = sampler_state.get("world_size", self.world_size), sampler_state.get("batch_size", sampler.batch_size)
        if start and (old_ws, old_bs) != (self.world_size, sampler.batch_size):
            seen = start * old_ws * old_bs
            start = min(math.ceil(seen / (self.world_size * sampler.batch_size)), len(sampler))
            self.logger.warning(
                "the checkpoint was written with %d process(es) x batch %d and this run uses %d x %d: the "
                "position in epoch %d is approximated (batch %d)", old_ws, old_bs, self.world_size,
                sampler.batch_size, self.epoch + 1, start,
            )
        self._batch_in_epoch = start
        set_rng_state(ckpt["rng"])
        self.pm.hook.detcore_load_checkpoint(runner=self, checkpoint=ckpt)
        self._last_saved_iter = self.iter
        self.logger.info(
            "resumed from %s: epoch %d, iteration %d (batch %d of the epoch; earlier batches are skipped "
            "by index, not loaded)", path, self.epoch + 1, self.iter, start,
        )
        dist.barrier()

    # ------------------------------------------------------------------
    # signals
    # ------------------------------------------------------------------

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            if self._signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C stops at once
            self._signal = signum
            if self.logger is not None and self.is_main:
                self.logger.warning(
                    "%s received: finishing the current iteration, then saving a checkpoint",
                    signal.Signals(signum).name,
                )

        for sig in (signal.SIGTERM, signal.SIGINT):
            old = signal.signal(sig, handler)
            self._restore.append(lambda sig=sig, old=old: signal.signal(sig, old))

    def _resume_hint(self, path: Path) -> str:
        if os.environ.get("DETCORE_LAUNCH_ARGV"):  # a worker of `detcore train --nproc N`
            argv = json.loads(os.environ["DETCORE_LAUNCH_ARGV"])
        else:
            argv = self.argv if self.argv is not None else sys.argv[1:]
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
            out = ["train", str(self.run.path)]
        hint = "detcore " + shlex.join([*out, "--resume", str(path)])
        if self.world_size > 1 and not os.environ.get("DETCORE_LAUNCH_ARGV"):
            hint += f"  (started the same way as this {self.world_size}-process run: torchrun or srun)"
        return hint

    # ------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------

    def train(self) -> int:
        """Run training; the exit status (0, or 143/130 after SIGTERM/SIGINT)."""
        try:
            self._setup_process()
            self._setup_seed()
            self._setup_data()
            self._resolve_resume()
            self._setup_model()
            self._setup_optim()
            self._setup_hooks()
            self._resume()
            self._install_signals()
            self.pm.hook.detcore_before_run(runner=self)
            status = self._loop()
            return status
        except TrainingDiverged as exc:
            if self.logger is not None:
                self.logger.error("%s", exc)
            raise
        finally:
            self._teardown()

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

    def _done(self) -> bool:
        return self.iter >= self.max_iters

    def _loop(self) -> int:
        cfg = self.cfg
        by_epoch = cfg.train.by_epoch
        sampler = self.train_loader.batch_sampler
        start = self._batch_in_epoch
        self._t_start = time.perf_counter()
        self._iters_at_start = self.iter
        self._window = {}
        self._window_n = 0
        self._window_time = 0.0
        self._window_data = 0.0
        interrupted = False
        while not self._done() and not self.stop_training:
            sampler.set_epoch(self.epoch, start)
            self._batch_in_epoch = start
            self.pm.hook.detcore_before_train_epoch(runner=self, epoch=self.epoch)
            try:
                finished_epoch = self._run_epoch(start)
            except Interrupted:
                interrupted = True
                break
            except KeyboardInterrupt:
                raise
            except Exception:
                if self._signal is not None:
                    # e.g. DataLoader workers killed by the same Ctrl-C
                    interrupted = True
                    break
                raise
            start = 0
            if finished_epoch:
                self.pm.hook.detcore_after_train_epoch(runner=self, epoch=self.epoch)
                self.epoch += 1
                self._batch_in_epoch = 0
                if by_epoch:
                    if self._val_due_epoch():
                        self.validate()
                    if self.epoch % cfg.checkpoint.interval == 0 or self._done():
                        self.save_checkpoint()
        if interrupted:
            path = self.save_checkpoint() if self._last_saved_iter != self.iter else self._latest_path()
            name = signal.Signals(self._signal).name
            self.logger.warning(
                "stopped by %s at iteration %d (epoch %d); checkpoint: %s\nresume with: %s",
                name, self.iter, self.epoch + 1, path, self._resume_hint(path),
            )
            self.pm.hook.detcore_after_run(runner=self)
            return _SIGNAL_EXIT.get(self._signal, 1)
        if self.val_dataset is not None and self._last_val_iter != self.iter:
            self.validate()
        if self._last_saved_iter != self.iter:
            self.save_checkpoint()
        self.pm.hook.detcore_after_run(runner=self)
        if self.last_metrics and self.is_main:
            from detcore.engine.evaluation import format_metrics

            self.logger.info("final metrics (iteration %d):\n%s", self._last_val_iter, format_metrics(self.last_metrics))
        elapsed = time.perf_counter() - self._t_start
        self.logger.info("training done: %d iterations in %s; work dir %s", self.iter, _fmt_time(elapsed), self.work_dir)
        return 0

    def _latest_path(self) -> Path:
        from detcore.engine.checkpoint import CheckpointFiles

        name = CheckpointFiles(self.work_dir).pointer().get("checkpoint")
        return self.work_dir / (name or self._checkpoint_name())

    def _val_due_epoch(self) -> bool:
        return self.val_dataset is not None and self.epoch % self.cfg.train.val_interval == 0

    def _run_epoch(self, start: int) -> bool:
        """Train over the rest of the epoch; ``True`` when the epoch ended
        (``False``: max_iters reached, stop requested or interrupted)."""
        from detcore.engine.amp import autocast
        from detcore.engine.evaluation import image_to_float

        cfg = self.cfg
        accumulate = cfg.train.accumulate
        n_batches = len(self.train_loader.batch_sampler)
        amp, device = cfg.train.amp, self.device
        by_epoch = cfg.train.by_epoch
        ddp = self.train_model is not self.model
        t_prev = time.perf_counter()
        group_start = start
        for b, (images, targets) in enumerate(self.train_loader, start=start):
            t_data = time.perf_counter()
            imgs = [image_to_float(i, device) for i in images]
            tgts = [target_to_device(t, device) for t in targets]
            if (b - group_start) % accumulate == 0:
                group_start = b
            group_size = min(accumulate, n_batches - group_start)
            step_now = b - group_start == group_size - 1
            iteration = self.iter
            self.pm.hook.detcore_before_train_iter(runner=self, iteration=iteration, batch=(imgs, tgts))
            sync_ctx = self.train_model.no_sync() if ddp and not step_now else contextlib.nullcontext()
            with sync_ctx:
                with autocast(amp, device):
                    losses = self.train_model(imgs, tgts)
                total = sum(losses.values())
                value = float(total.detach())
                # Every rank stops together: a rank left running would wait
                # forever in DDP's gradient all-reduce.
                if dist.any_rank(not math.isfinite(value)):
                    self._diverged(iteration, losses, here=not math.isfinite(value))
                loss = total / group_size
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            if step_now:
                self._step()
                self._batch_in_epoch = b + 1
            detached = {k: v.detach() for k, v in losses.items()}
            detached["loss"] = total.detach()
            for k, v in detached.items():
                self._window[k] = self._window.get(k, 0) + v.float()
            self._window_n += 1
            t_end = time.perf_counter()
            self._window_time += t_end - t_prev
            self._window_data += t_data - t_prev
            t_prev = t_end
            self.pm.hook.detcore_after_train_iter(runner=self, iteration=iteration, losses=detached)
            if not step_now:
                continue
            if self.iter % cfg.train.log_interval == 0 or self._done():
                self._log_train()
            if not by_epoch:
                if self.val_dataset is not None and self.iter % cfg.train.val_interval == 0:
                    self.validate()
                if self.iter % cfg.checkpoint.interval == 0 or self._done():
                    self.save_checkpoint()
            if self.world_size > 1:
                self._agree_on_stop()
            if self._signal is not None:
                raise Interrupted
            if self.stop_training:
                self.logger.info("stop_training set at iteration %d: saving and stopping", self.iter)
                if self._batch_in_epoch >= n_batches:
                    return True
                return False
            if self._done():
                return self._batch_in_epoch >= n_batches
            t_prev = time.perf_counter()
        return True

    def _agree_on_stop(self) -> None:
        """Make every rank stop at the same iteration: a signal or
        ``stop_training`` seen by one rank (signals reach ranks at different
        moments) stops all, so none is left waiting in a collective."""
        sig, stop = dist.max_over_ranks([int(self._signal or 0), int(bool(self.stop_training))])
        if sig and self._signal is None:
            self._signal = sig
        self.stop_training = bool(stop)

    def _flag_device(self):
        import torch.distributed as tdist

        return self.device if tdist.get_backend() == "nccl" else "cpu"

    def _step(self) -> None:
        import torch

        cfg = self.cfg
        self.lr_scheduler.set_iter(self.iter)
        if cfg.train.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            if self._clip_params is None:  # clip_grad_norm_ skips params without a grad
                self._clip_params = [p for g in self.optimizer.param_groups for p in g["params"]]
            self._grad_norm = torch.nn.utils.clip_grad_norm_(self._clip_params, cfg.train.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iter += 1

    def _diverged(self, iteration: int, losses: dict, here: bool = True) -> None:
        terms = ", ".join(f"{k}={float(v.detach()):.6g}" for k, v in losses.items())
        if not here:
            terms = f"on another rank (this rank's: {terms})"
        latest = self._latest_path() if self._last_saved_iter >= 0 else None
        where = (
            f"The last good checkpoint is {latest} (left untouched)"
            if latest is not None and latest.exists()
            else "No checkpoint was written before it"
        )
        raise TrainingDiverged(
            f"the loss is not finite at iteration {iteration} (epoch {self.epoch + 1}): {terms}. Training "
            f"stopped without saving. {where}. Lower optimizer.lr, add warmup (lr_schedule.warmup_iters), "
            f"set train.grad_clip, or check the data of this batch."
        )

    def _log_train(self) -> None:
        import torch

        n = max(self._window_n, 1)
        window = self._window
        if self.world_size > 1 and window:
            # The global batch's losses (as MMDetection logs them): every
            # rank logs at the same iterations, with the same loss names.
            import torch.distributed as tdist

            keys = sorted(window)
            t = torch.stack([window[k].reshape(()).float() for k in keys]).to(self._flag_device())
            tdist.all_reduce(t)
            window = dict(zip(keys, (t / self.world_size).unbind()))
        values = {k: float(v) / n for k, v in window.items()}
        lrs = self.optimizer.param_groups
        lr = next((g["lr"] for g in lrs if g.get("lr_mult", 1.0) == 1.0), lrs[0]["lr"])
        iter_time = self._window_time / n
        done = self.iter - self._iters_at_start
        elapsed = time.perf_counter() - self._t_start
        eta = elapsed / max(done, 1) * (self.max_iters - self.iter)
        if self.device.type == "cuda":
            mem = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            import resource

            mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        record = {
            "mode": "train",
            "epoch": self.epoch + 1,
            "iter": self.iter,
            "lr": lr,
            **values,
            "data_time": self._window_data / n,
            "time": iter_time,
            "eta_s": eta,
            "memory_mb": round(mem, 1),
        }
        if getattr(self, "_grad_norm", None) is not None:
            record["grad_norm"] = float(self._grad_norm)
        record.update(self._pending_scalars)
        self._pending_scalars = {}
        self._window, self._window_n, self._window_time, self._window_data = {}, 0, 0.0, 0.0
        if self.is_main:
            self._scalars.write(record)
            terms = " ".join(f"{k} {v:.4f}" for k, v in values.items() if k != "loss")
            epoch = f"epoch {self.epoch + 1}/{self.max_epochs} " if self.max_epochs else ""
            self.logger.info(
                "%siter %d/%d lr %.3g loss %.4f (%s) time %.3fs data %.3fs eta %s mem %.0fMB",
                epoch, self.iter, self.max_iters, lr, values.get("loss", float("nan")), terms,
                iter_time, record["data_time"], _fmt_time(eta), mem,
            )

    # ------------------------------------------------------------------
    # validation
    # ------------------------------------------------------------------

    def validate(self) -> dict[str, float]:
        """Evaluate the validation model (``detcore_val_model``, else the
        model) on the validation set; log and return the metrics."""
        from detcore.engine.evaluation import evaluate, format_metrics

        model = self.pm.hook.detcore_val_model(runner=self) or self.model
        self.pm.hook.detcore_before_val_epoch(runner=self)
        t0 = time.perf_counter()

        def on_batch(batch, outputs):
            self.pm.hook.detcore_after_val_iter(runner=self, batch=batch, outputs=outputs)

        metrics = evaluate(
            model,
            self.val_dataset,
            self.metrics,
            device=self.device,
            batch_size=self.cfg.data.val_batch_size or self.cfg.data.batch_size,
            workers=self.cfg.data.workers,
            amp=self.cfg.train.amp,
            eval_timeout_s=self.cfg.dist.eval_timeout_s,
            on_batch=on_batch,
        )
        self.last_metrics = metrics
        self._last_val_iter = self.iter
        if self.is_main:
            self._scalars.write({"mode": "val", "epoch": self.epoch, "iter": self.iter, **metrics})
            where = f"epoch {self.epoch}" if self.cfg.train.by_epoch else f"iteration {self.iter}"
            self.logger.info(
                "validation after %s (%.1fs):\n%s", where, time.perf_counter() - t0, format_metrics(metrics)
            )
        self.pm.hook.detcore_after_val_epoch(runner=self, metrics=metrics)
        self._maybe_save_best(metrics)
        return metrics


def target_to_device(t: dict, device) -> dict:
    """The target on ``device`` without its crowd boxes: datasets keep
    them (``iscrowd`` 1, ignore regions for evaluation) but the models
    would train on them as objects."""
    import torch

    keep = None
    crowd = t.get("iscrowd")
    if isinstance(crowd, torch.Tensor) and crowd.numel() and bool(crowd.any()):
        keep = crowd.as_subclass(torch.Tensor) == 0
    out = {}
    for k, v in t.items():
        if isinstance(v, torch.Tensor):
            v = v.as_subclass(torch.Tensor)
            if keep is not None and k in ("boxes", "labels", "masks", "iscrowd", "area"):
                v = v[keep]
            v = v.to(device, non_blocking=True)
            if k == "boxes":
                v = v.float()
        out[k] = v
    return out
