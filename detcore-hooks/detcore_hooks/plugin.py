"""The ``hooks`` entry point: registers detcore-hooks' runner hooks.

The factories below are the run-file interface of each ``[[hooks]]`` table
(their parameters are checked by ``detcore config check``). This module stays
light: the hook classes, and torch, are imported when a factory is called.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from detcore import ConfigCheckError, MetricName, check_with, hookimpl

TENSORBOARD_HINT = "pip install 'detcore-hooks[tensorboard]'"


# ----------------------------------------------------------------------
# checks (run by `detcore config check` and before training)
# ----------------------------------------------------------------------


def _unit_interval(key: str, *, low_open: bool = True):
    def check(args: dict, ctx) -> None:
        if key in args:
            v = args[key]
            if not (0 < v <= 1 if low_open else 0 <= v <= 1):
                interval = "(0, 1]" if low_open else "[0, 1]"
                raise ConfigCheckError(f"must be in {interval}, got {v}", key=key)

    return check


def _non_negative(*keys: str):
    def check(args: dict, ctx) -> None:
        for key in keys:
            if args.get(key) is not None and args[key] < 0:
                raise ConfigCheckError(f"must be >= 0, got {args[key]}", key=key)

    return check


def _positive(*keys: str):
    def check(args: dict, ctx) -> None:
        for key in keys:
            if args.get(key) is not None and args[key] <= 0:
                raise ConfigCheckError(f"must be > 0, got {args[key]}", key=key)

    return check


def _all(*checks):
    def check(args: dict, ctx) -> None:
        for c in checks:
            c(args, ctx)

    return check


def _check_ema(args: dict, ctx) -> None:
    _unit_interval("momentum")(args, ctx)
    _non_negative("warmup_iters")(args, ctx)
    _positive("interval")(args, ctx)


def _check_early_stopping(args: dict, ctx) -> None:
    if not args.get("metric"):
        raise ConfigCheckError("name the validation metric to watch, e.g. metric = \"bbox_mAP\"", key="metric")
    _positive("patience")(args, ctx)
    _non_negative("min_delta")(args, ctx)


def _check_tensorboard(args: dict, ctx) -> None:
    _positive("interval")(args, ctx)
    require_tensorboard()


def require_tensorboard() -> None:
    """Raise a :class:`ConfigCheckError` naming the extra when tensorboard is
    not installed (checked without importing it)."""
    try:
        found = importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigCheckError(
            "the 'tensorboard' hook writes event files with torch.utils.tensorboard, which needs "
            f"the tensorboard package; install it with: {TENSORBOARD_HINT}",
            key="type",
        )


def _check_freeze(args: dict, ctx) -> None:
    if not args.get("prefixes"):
        raise ConfigCheckError(
            "name at least one parameter prefix to freeze, e.g. prefixes = [\"backbone\"]",
            key="prefixes",
        )
    _non_negative("from_epoch")(args, ctx)
    until, start = args.get("until_epoch"), args.get("from_epoch", 0)
    if until is not None and until <= start:
        raise ConfigCheckError(
            f"until_epoch ({until}) must be after from_epoch ({start})", key="until_epoch"
        )


def _check_profiler(args: dict, ctx) -> None:
    _non_negative("wait", "warmup")(args, ctx)
    _positive("active")(args, ctx)


# ----------------------------------------------------------------------
# factories: the run-file interface
# ----------------------------------------------------------------------


@check_with(_check_ema)
def ema(
    momentum: float = 0.0002,
    warmup_iters: int = 2000,
    interval: int = 1,
    update_buffers: bool = False,
) -> Any:
    """Exponential moving average of the model's weights, used for validation.

    After every ``interval`` optimizer steps: ``ema = (1 - m) * ema + m * weights``
    with ``m = (1 - momentum) * exp(-(1 + step) / warmup_iters) + momentum``
    (MMDetection's ``ExpMomentumEMA``; ``warmup_iters = 0``: ``m = momentum``).
    ``update_buffers`` averages floating buffers (BatchNorm statistics) too
    instead of copying them.
    """
    from detcore_hooks.ema import EMAHook

    return EMAHook(momentum=momentum, warmup_iters=warmup_iters, interval=interval, update_buffers=update_buffers)


@check_with(_check_early_stopping)
def early_stopping(
    metric: MetricName,
    mode: Literal["max", "min"] = "max",
    patience: int = 5,
    min_delta: float = 0.0,
    check_finite: bool = True,
) -> Any:
    """Stop training when validation ``metric`` has not improved by more than
    ``min_delta`` for ``patience`` validations in a row."""
    from detcore_hooks.early_stopping import EarlyStoppingHook

    return EarlyStoppingHook(metric=metric, mode=mode, patience=patience, min_delta=min_delta, check_finite=check_finite)


@check_with(_check_tensorboard)
def tensorboard(
    log_dir: str | None = None,
    interval: int | None = None,
) -> Any:
    """TensorBoard scalars: every loss term, the total loss and the lr (averaged
    over ``interval`` iterations, default ``train.log_interval``) and every
    validation metric. Event files go to ``log_dir`` (default
    ``<work_dir>/tensorboard``)."""
    try:
        require_tensorboard()
    except ConfigCheckError as exc:
        from detcore.errors import DetcoreError

        raise DetcoreError(str(exc)) from None
    from detcore_hooks.tensorboard import TensorBoardHook

    return TensorBoardHook(log_dir=log_dir, interval=interval)


@check_with(_all(_positive("num_images", "interval"), _unit_interval("score_thr", low_open=False)))
def visualize(
    num_images: int = 4,
    score_thr: float = 0.3,
    interval: int = 1,
    out_dir: str = "vis",
    draw_masks: bool = True,
) -> Any:
    """After validation, draw the first ``num_images`` validation images with
    the ground truth (left) and the predictions scoring at least ``score_thr``
    (right) and write them as PNGs to ``<work_dir>/<out_dir>/``."""
    from detcore_hooks.visualize import VisualizeHook

    return VisualizeHook(num_images=num_images, score_thr=score_thr, interval=interval, out_dir=out_dir, draw_masks=draw_masks)


@check_with(_check_freeze)
def freeze(
    prefixes: list[str],
    from_epoch: int = 0,
    until_epoch: int | None = None,
    norm_eval: bool = True,
) -> Any:
    """Freeze the parameters whose names start with one of ``prefixes`` (e.g.
    ``"backbone"`` or ``"backbone.body.layer1"``) from epoch ``from_epoch``
    until (not including) ``until_epoch``; ``norm_eval`` also keeps their
    normalisation layers in eval mode."""
    from detcore_hooks.freeze import FreezeHook

    return FreezeHook(prefixes=prefixes, from_epoch=from_epoch, until_epoch=until_epoch, norm_eval=norm_eval)


@check_with(_positive("interval"))
def check_finite(
    interval: int = 1,
    check_grads: bool = True,
) -> Any:
    """Every ``interval`` optimizer steps, check that parameters (and
    gradients) are finite; fail naming the first offending parameters before
    a non-finite model reaches a checkpoint or the EMA. (The runner itself
    already stops on a NaN/inf loss.)"""
    from detcore_hooks.check_finite import CheckFiniteHook

    return CheckFiniteHook(interval=interval, check_grads=check_grads)


@check_with(_check_profiler)
def profiler(
    wait: int = 5,
    warmup: int = 2,
    active: int = 5,
    out_dir: str = "profiler",
    record_shapes: bool = False,
    profile_memory: bool = False,
    with_stack: bool = False,
) -> Any:
    """A ``torch.profiler`` trace of ``active`` training iterations, after
    skipping ``wait`` and warming up for ``warmup`` (counted from the start of
    this process), written as a Chrome trace JSON to ``<work_dir>/<out_dir>/``
    (open it in chrome://tracing or https://ui.perfetto.dev)."""
    from detcore_hooks.profiler import ProfilerHook

    return ProfilerHook(
        wait=wait,
        warmup=warmup,
        active=active,
        out_dir=out_dir,
        record_shapes=record_shapes,
        profile_memory=profile_memory,
        with_stack=with_stack,
    )


@hookimpl
def detcore_runner_hooks() -> dict[str, Any]:
    return {
        "ema": ema,
        "early_stopping": early_stopping,
        "tensorboard": tensorboard,
        "visualize": visualize,
        "freeze": freeze,
        "check_finite": check_finite,
        "profiler": profiler,
    }
