"""A timm ``features_only`` model as a detcore backbone: an ``OrderedDict``
of feature maps named ``"0"``, ``"1"``, ... and their ``out_channels``."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

import torch
from torch import nn

from detcore import CheckpointError, pretrained_skipped
from detcore_timm.plugin import default_out_indices, is_file_weights

log = logging.getLogger("detcore")

_NORMS = (nn.modules.batchnorm._BatchNorm,)


class TimmBackbone(nn.Module):
    """``body``: timm's feature extractor (``FeatureListNet``).

    ``frozen`` names the top-level layers of ``body`` that do not train:
    their parameters take no gradient and, like MMDetection's frozen stages,
    they stay in eval mode. ``norm_eval`` keeps every BatchNorm in eval mode
    (running statistics fixed, affine parameters still learn).
    """

    def __init__(self, body: nn.Module, frozen: list[str], norm_eval: bool) -> None:
        super().__init__()
        self.body = body
        self.out_channels = list(body.feature_info.channels())
        self.strides = list(body.feature_info.reduction())
        self.frozen = list(frozen)
        self.norm_eval = norm_eval
        children = dict(body.named_children())
        for name in self.frozen:
            children[name].requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            children = dict(self.body.named_children())
            for name in self.frozen:
                children[name].eval()
            if self.norm_eval:
                for m in self.body.modules():
                    if isinstance(m, _NORMS):
                        m.eval()
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return OrderedDict((str(i), f) for i, f in enumerate(self.body(x)))


def _frozen_layers(body: nn.Module, frozen_stages: int) -> list[str]:
    """Top-level layers of ``body`` up to the one producing feature
    ``frozen_stages`` (timm's ``FeatureListNet`` flattens the model's
    modules in forward order; ``stages.1`` becomes ``stages_1``)."""
    if frozen_stages < 0:
        return []
    # Index into all of timm's feature levels, not only the returned ones.
    target = body.feature_info.info[frozen_stages]["module"].replace(".", "_")
    names = [n for n, _ in body.named_children()]
    if target not in names:  # features taken inside a layer: freeze that whole layer
        target = next((n for n in names if target.startswith(n + "_") or target == n), names[-1])
    return names[: names.index(target) + 1]


def build(name: str, out_indices: list[int] | None, weights: bool | str, frozen_stages: int,
          norm_eval: bool) -> TimmBackbone:
    import timm

    from detcore_timm.plugin import feature_info

    if out_indices is None:
        out_indices = default_out_indices(feature_info(name)[1])
    kwargs: dict = {"features_only": True, "out_indices": tuple(out_indices)}
    source = None
    if weights and not pretrained_skipped():
        if isinstance(weights, str) and is_file_weights(weights):
            path = os.path.expanduser(weights)
            if not os.path.isfile(path):
                raise CheckpointError(f"model.backbone.weights: file '{weights}' does not exist")
            # timm's own loader reads the file (and drops the classifier for features_only).
            kwargs["pretrained_cfg_overlay"] = {"file": path}
            source = path
        elif isinstance(weights, str):
            name = f"{name}.{weights}"
        kwargs["pretrained"] = True
        source = source or f"timm {name} (Hugging Face Hub or its cache)"
    try:
        body = timm.create_model(name, **kwargs)
    except (OSError, RuntimeError) as exc:
        if source is None:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"model.backbone.weights: cannot load the weights of {source} ({first}). Offline, the hub "
            f"weights must already be in the Hugging Face cache (~/.cache/huggingface/hub, or $HF_HOME): "
            f"run `hf download timm/{name}` on a connected machine and copy the cache, or give a local "
            f"weights file of the same architecture."
        ) from None
    if source is not None:
        log.info("loaded backbone weights for timm %s from %s", name, source)
    return TimmBackbone(body, _frozen_layers(body, frozen_stages), norm_eval)
