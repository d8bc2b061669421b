"""Optimizers with parameter-group rules, and the linear LR scaling rule."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer", "scaled_lr"]

# Parameters of these modules are "norm" parameters (no weight decay by
# default, as in Detectron2 and MMDetection's norm_decay_mult = 0).
NORM_TYPES: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def param_groups(model: nn.Module, cfg) -> list[dict[str, Any]]:
    """Parameter groups for ``cfg`` (an :class:`OptimizerConfig`): weight
    decay 0 for normalisation parameters unless ``norm_decay`` and for
    biases unless ``bias_decay``; learning rate ``lr * backbone_lr_mult`` for
    the parameters of ``model.backbone`` (a detector whose backbone sits
    deeper, such as a wrapped transformers model, exposes it as a
    ``backbone`` property). Each group records its ``lr_mult`` (the LR
    schedule scales ``lr_mult * lr``) and a ``name``."""
    norm_params = set()
    for module in model.modules():
        if isinstance(module, NORM_TYPES):
            norm_params.update(id(p) for p in module.parameters(recurse=False))
    backbone = getattr(model, "backbone", None)
    backbone_params = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    groups: dict[tuple[str, float, float], dict] = {}
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        is_norm = id(p) in norm_params
        is_bias = name.endswith(".bias") or name == "bias"
        decay = cfg.weight_decay
        kind = "weight"
        if is_norm:
            kind = "norm"
            if not cfg.norm_decay:
                decay = 0.0
        elif is_bias:
            kind = "bias"
            if not cfg.bias_decay:
                decay = 0.0
        in_backbone = id(p) in backbone_params or name.startswith("backbone.")
        mult = cfg.backbone_lr_mult if in_backbone else 1.0
        part = "backbone" if in_backbone else "rest"
        key = (f"{part}.{kind}", decay, mult)
        g = groups.setdefault(
            key, {"params": [], "param_names": [], "weight_decay": decay, "lr_mult": mult, "name": key[0]}
        )
        g["params"].append(p)
        g["param_names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg, lr: float) -> torch.optim.Optimizer:
    """``sgd``, ``adamw`` or ``adam`` over :func:`param_groups` with base
    learning rate ``lr`` (after auto-scaling)."""
    groups = param_groups(model, cfg)
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    if cfg.type == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    betas = tuple(cfg.betas)
    if cfg.type == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=cfg.weight_decay)
    if cfg.type == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.type!r}")  # the schema's Literal rejects it first


def scaled_lr(lr: float, batch_size: int, world_size: int, base_batch_size: int, accumulate: int = 1) -> float:
    """The linear scaling rule (Goyal et al.; MMDetection's auto_scale_lr):
    ``lr * global_batch / base_batch_size`` with ``global_batch = batch_size
    * world_size * accumulate`` (images per optimizer step)."""
    return lr * (batch_size * world_size * accumulate) / base_batch_size
