"""The top level of a run file, as frozen attrs classes.

Each field is a run-file key; its docstring-like ``metadata["doc"]`` is what
``docs/runfile.md`` documents. Component tables (``model``, ``data.train``,
``metrics``, ``hooks`` ...) stay plain dicts here and are checked against the
components' signatures by :mod:`detcore.runfile.validate`.
"""

from __future__ import annotations

from typing import Literal

import attrs

from detcore.errors import ConfigCheckError, shorten


def _doc(text: str, **kw):
    return {"doc": text, **kw}


def positive(inst, attribute, value):
    if value is not None and value <= 0:
        raise ValueError(f"must be > 0, got {value}")


def non_negative(inst, attribute, value):
    if value is not None and value < 0:
        raise ValueError(f"must be >= 0, got {value}")


_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text) -> float:
    """Seconds in a duration such as ``"2h"``, ``"90m"``, ``"1h30m"``,
    ``"45s"`` or ``"1.5h"``; ValueError naming the accepted forms."""
    import re

    if isinstance(text, str):
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text.strip().lower())
        joined = "".join(f"{n}{u}" for n, u in parts)
        if parts and joined == re.sub(r"\s+", "", text.strip().lower()):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
            if seconds > 0:
                return seconds
    raise ValueError(f"must be a duration with units such as \"2h\", \"90m\", \"1h30m\" or \"45s\", got {text!r}")


def duration(inst, attribute, value):
    if value is not None:
        parse_duration(value)


def component(kind: str, doc: str, *, default=None, many: bool = False):
    """A field holding a component table (or a list of them) of ``kind``."""
    if many:
        return attrs.field(factory=list, metadata=_doc(doc, component=kind, many=True))
    return attrs.field(default=default, metadata=_doc(doc, component=kind))


@attrs.frozen
class DataConfig:
    batch_size: int = attrs.field(default=2, validator=positive, metadata=_doc("images per process per iteration"))
    val_batch_size: int | None = attrs.field(default=None, validator=positive, metadata=_doc("images per process in validation/test (default: batch_size)"))
    workers: int = attrs.field(default=2, validator=non_negative, metadata=_doc("DataLoader worker processes per process"))
    pin_memory: bool = attrs.field(default=False, metadata=_doc("pin host memory (faster host-to-GPU copies)"))
    persistent_workers: bool = attrs.field(default=False, metadata=_doc("keep workers alive between epochs"))
    aspect_ratio_grouping: bool = attrs.field(default=True, metadata=_doc("batch images of like aspect ratio (w >= h vs w < h) together"))
    train: dict | None = component("dataset", "training dataset table")
    val: dict | None = component("dataset", "validation dataset table (no validation when absent)")
    test: dict | None = component("dataset", "test dataset table for `detcore test` (default: val)")


@attrs.frozen
class OptimizerConfig:
    type: Literal["sgd", "adamw", "adam"] = attrs.field(default="sgd", metadata=_doc("optimizer"))
    lr: float = attrs.field(default=0.01, validator=positive, metadata=_doc("base learning rate"))
    momentum: float = attrs.field(default=0.9, validator=non_negative, metadata=_doc("SGD momentum"))
    nesterov: bool = attrs.field(default=False, metadata=_doc("SGD Nesterov momentum"))
    weight_decay: float = attrs.field(default=1e-4, validator=non_negative, metadata=_doc("weight decay"))
    betas: list[float] = attrs.field(factory=lambda: [0.9, 0.999], metadata=_doc("Adam/AdamW betas"))
    norm_decay: bool = attrs.field(default=False, metadata=_doc("apply weight decay to normalisation layers' parameters"))
    bias_decay: bool = attrs.field(default=False, metadata=_doc("apply weight decay to biases"))
    backbone_lr_mult: float = attrs.field(default=1.0, validator=non_negative, metadata=_doc("learning-rate multiplier for parameters under model.backbone"))

    @betas.validator
    def _betas(self, attribute, value):
        if len(value) != 2 or not all(0 <= b < 1 for b in value):
            raise ValueError(f"must be two numbers in [0, 1), got {shorten(value)}")


@attrs.frozen
class LRScheduleConfig:
    type: Literal["constant", "step", "multistep", "cosine", "poly", "flat_cosine"] = attrs.field(default="multistep", metadata=_doc("schedule after warmup"))
    by_epoch: bool = attrs.field(default=True, metadata=_doc("milestones/step_size/flat_until/decay_until count epochs (true) or iterations (false)"))
    milestones: list[int] = attrs.field(factory=list, metadata=_doc("multistep: where the LR is multiplied by gamma"))
    step_size: int | None = attrs.field(default=None, validator=positive, metadata=_doc("step: period of the decay"))
    gamma: float = attrs.field(default=0.1, validator=positive, metadata=_doc("step/multistep decay factor"))
    power: float = attrs.field(default=1.0, validator=positive, metadata=_doc("poly: exponent"))
    min_lr_ratio: float = attrs.field(default=0.0, validator=non_negative, metadata=_doc("cosine/poly/flat_cosine: final LR as a fraction of the base LR"))
    flat_until: int | None = attrs.field(default=None, validator=non_negative, metadata=_doc("flat_cosine: the LR stays at its base value until here, then decays"))
    decay_until: int | None = attrs.field(default=None, validator=positive, metadata=_doc("flat_cosine: the cosine decay ends here and the LR stays at min_lr_ratio after (default: the end of training)"))
    warmup: Literal["linear", "constant", "none"] = attrs.field(default="linear", metadata=_doc("warmup kind"))
    warmup_iters: int = attrs.field(default=0, validator=non_negative, metadata=_doc("warmup length in iterations (0: no warmup)"))
    warmup_ratio: float = attrs.field(default=0.001, validator=positive, metadata=_doc("LR factor at the start of warmup"))

    def __attrs_post_init__(self):
        if self.type == "step" and self.step_size is None:
            raise ConfigCheckError("type = 'step' needs step_size", key="step_size")
        if self.type == "multistep" and sorted(self.milestones) != list(self.milestones):
            raise ConfigCheckError(f"milestones must be increasing, got {self.milestones}", key="milestones")
        if self.type == "flat_cosine":
            if self.flat_until is None:
                raise ConfigCheckError(
                    "type = 'flat_cosine' needs flat_until: the epoch (iteration with by_epoch = false) "
                    "where the flat LR ends and the cosine decay starts", key="flat_until")
            if self.decay_until is not None and self.decay_until <= self.flat_until:
                raise ConfigCheckError(
                    f"decay_until ({self.decay_until}) must be after flat_until ({self.flat_until}): "
                    "the cosine decay runs between them", key="decay_until")
        if self.min_lr_ratio > 1:
            raise ConfigCheckError(f"min_lr_ratio must be at most 1 (a fraction of the base LR), got {self.min_lr_ratio}",
                                   key="min_lr_ratio")


@attrs.frozen
class TrainConfig:
    max_epochs: int | None = attrs.field(default=None, validator=positive, metadata=_doc("train for this many epochs (or max_iters)"))
    max_iters: int | None = attrs.field(default=None, validator=positive, metadata=_doc("train for this many iterations (or max_epochs)"))
    val_interval: int = attrs.field(default=1, validator=positive, metadata=_doc("validate every N epochs (iterations for max_iters runs)"))
    log_interval: int = attrs.field(default=20, validator=positive, metadata=_doc("log scalars every N iterations"))
    amp: Literal["bf16", "fp16"] | None = attrs.field(default=None, metadata=_doc("mixed precision: bf16 autocast (CPU, CUDA) or fp16 with a GradScaler (CUDA)"))
    grad_clip: float | None = attrs.field(default=None, validator=positive, metadata=_doc("clip the gradient norm to this value"))
    accumulate: int = attrs.field(default=1, validator=positive, metadata=_doc("gradient accumulation: micro-batches per optimizer step"))
    deterministic: bool = attrs.field(default=False, metadata=_doc("torch deterministic algorithms and cudnn flags"))
    max_time: str | None = attrs.field(default=None, validator=duration, metadata=_doc("wall-clock budget of the training loop (\"2h\", \"90m\", \"1h30m\"): training stops at the first step past it, then validates and saves"))
    stretch_schedule: bool = attrs.field(default=False, metadata=_doc("with max_time: the run lasts the budget (max_epochs/max_iters only set the LR schedule's shape) and the LR schedule is stretched over the iterations that fit in it"))

    def __attrs_post_init__(self):
        if self.stretch_schedule and self.max_time is None:
            raise ConfigCheckError("stretch_schedule needs max_time (the budget to stretch the schedule over)",
                                   key="stretch_schedule")
        if (self.max_epochs is None) == (self.max_iters is None):
            if self.max_epochs is None:
                raise ConfigCheckError("give exactly one of max_epochs and max_iters (neither is set)", key="max_epochs")
            raise ConfigCheckError(
                f"give exactly one of max_epochs and max_iters, not both (max_epochs = {self.max_epochs}, "
                f"max_iters = {self.max_iters}); to switch a run file's schedule from the command "
                f"line, remove the other key: --set train.max_iters= --set train.max_epochs=N",
                key="max_epochs",
            )

    @property
    def by_epoch(self) -> bool:
        return self.max_epochs is not None

    @property
    def max_time_s(self) -> float | None:
        return None if self.max_time is None else parse_duration(self.max_time)


@attrs.frozen
class CheckpointConfig:
    interval: int = attrs.field(default=1, validator=positive, metadata=_doc("save every N epochs (iterations for max_iters runs)"))
    keep: int = attrs.field(default=3, metadata=_doc("keep the newest N interval checkpoints (-1: all)"))
    save_best: str | None = attrs.field(default=None, metadata=_doc("metric name to keep the best checkpoint by, e.g. bbox_mAP"))
    best_rule: Literal["greater", "less"] = attrs.field(default="greater", metadata=_doc("whether a greater or smaller save_best value is better"))

    @keep.validator
    def _keep(self, attribute, value):
        if value == 0 or value < -1:
            raise ValueError(f"must be a positive number or -1 (keep all), got {value}")


@attrs.frozen
class AutoScaleLRConfig:
    enable: bool = attrs.field(default=False, metadata=_doc("scale lr by global batch / base_batch_size (also --auto-scale-lr)"))
    base_batch_size: int = attrs.field(default=16, validator=positive, metadata=_doc("global batch size the configured lr was tuned for"))


@attrs.frozen
class DistConfig:
    backend: Literal["auto", "nccl", "gloo"] = attrs.field(default="auto", metadata=_doc("process-group backend (auto: nccl on CUDA, gloo on CPU)"))
    find_unused_parameters: bool = attrs.field(default=False, metadata=_doc("DDP find_unused_parameters"))
    sync_bn: bool = attrs.field(default=False, metadata=_doc("convert BatchNorm to SyncBatchNorm"))
    timeout_s: float = attrs.field(default=1800.0, validator=positive, metadata=_doc("timeout of collectives during training"))
    eval_timeout_s: float = attrs.field(default=7200.0, validator=positive, metadata=_doc("how long other ranks wait for rank 0 to compute metrics"))
    port: int | None = attrs.field(default=None, validator=positive, metadata=_doc("master port for --nproc (default: a free port)"))


@attrs.frozen
class RunConfig:
    model: dict = component("detector", "the detector table", default=None)
    data: DataConfig = attrs.field(factory=DataConfig, metadata=_doc("data loading"))
    work_dir: str | None = attrs.field(default=None, metadata=_doc("output directory (default: work_dirs/<run file stem>)"))
    seed: int | None = attrs.field(default=0, metadata=_doc("random seed (python, numpy, torch)"))
    device: str = attrs.field(default="auto", metadata=_doc("auto, cpu, cuda or cuda:N"))
    plugins: list[str] = attrs.field(factory=list, metadata=_doc("extra plugin modules to load for this run"))
    load_from: str | None = attrs.field(default=None, metadata=_doc("checkpoint or state dict to initialise weights from (fine-tuning)"))
    optimizer: OptimizerConfig = attrs.field(factory=OptimizerConfig, metadata=_doc("optimizer"))
    lr_schedule: LRScheduleConfig = attrs.field(factory=LRScheduleConfig, metadata=_doc("learning-rate schedule"))
    train: TrainConfig = attrs.field(factory=lambda: TrainConfig(max_epochs=12), metadata=_doc("training schedule"))
    checkpoint: CheckpointConfig = attrs.field(factory=CheckpointConfig, metadata=_doc("checkpoint policy"))
    auto_scale_lr: AutoScaleLRConfig = attrs.field(factory=AutoScaleLRConfig, metadata=_doc("linear LR scaling rule"))
    dist: DistConfig = attrs.field(factory=DistConfig, metadata=_doc("distributed settings"))
    metrics: list[dict] = component("metric", "evaluation metrics", many=True)
    hooks: list[dict] = component("runner_hook", "runner hooks for this run", many=True)

    def __attrs_post_init__(self):
        # flat_cosine's points must lie inside the run when both count the
        # same unit (an epoch point in an iteration-based run is checked when
        # the runner knows the loader's length).
        sched, train = self.lr_schedule, self.train
        if sched.type == "flat_cosine":
            end = train.max_epochs if sched.by_epoch else train.max_iters
            unit = "max_epochs" if sched.by_epoch else "max_iters"
            for key in ("flat_until", "decay_until"):
                value = getattr(sched, key)
                if end is not None and value is not None and value >= end:
                    raise ConfigCheckError(
                        f"{key} = {value} is not before the end of training (train.{unit} = {end}); "
                        f"make it smaller so that the cosine decay happens", key=f"lr_schedule.{key}")

    @device.validator
    def _device(self, attribute, value):
        import re

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {shorten(repr(value))}")

