"""Building a run's parts from a validated run file, and the DDP wrapper."""

from __future__ import annotations

from detcore.errors import DetcoreError, RunFileError

__all__ = ["build_model", "build_dataset", "build_metrics", "build_hooks", "wrap_model"]


def _build(run, kind: str, table: dict, path: str):
    try:
        return run.catalog.build(kind, table, path=path)
    except RunFileError as exc:
        if exc.file is None:
            raise RunFileError(exc.problem, file=run.raw.file_of(exc.key or path), key=exc.key) from None
        raise


def build_model(run):
    """The detector of ``[model]``."""
    return _build(run, "detector", run.cfg.model, "model")


def build_dataset(run, split: str):
    """The dataset of ``[data.<split>]``, or ``None`` when the table is absent."""
    table = getattr(run.cfg.data, split)
    if table is None:
        return None
    return _build(run, "dataset", table, f"data.{split}")


def build_metrics(run) -> list:
    return [_build(run, "metric", t, f"metrics[{i}]") for i, t in enumerate(run.cfg.metrics)]


def build_hooks(run) -> list[tuple[str, object]]:
    """``[(name, hook object), ...]`` of the ``[[hooks]]`` tables, in order;
    the names are unique per run (``runner-hook:<index>:<type>``)."""
    return [
        (f"runner-hook:{i}:{t['type']}", _build(run, "runner_hook", t, f"hooks[{i}]"))
        for i, t in enumerate(run.cfg.hooks)
    ]


def wrap_model(model, info, dist_cfg, device):
    """``(model, train_model)``: with world size 1 both are ``model``;
    otherwise BatchNorm becomes SyncBatchNorm when ``dist.sync_bn`` and the
    train model is ``DistributedDataParallel`` (with
    ``dist.find_unused_parameters``). ``model`` is what hooks, evaluation and
    checkpoints see (unwrapped)."""
    if not info.distributed:
        return model, model
    if dist_cfg.sync_bn and device.type != "cuda":
        # Checked here, before the first iteration: SyncBatchNorm raises only
        # in its forward pass, with a message that does not name the key.
        raise DetcoreError("dist.sync_bn needs CUDA (SyncBatchNorm does not run on CPU); set dist.sync_bn = false")
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if dist_cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=dist_cfg.find_unused_parameters,
    )
    return model, ddp
