"""Pretrained weights: torchvision weights names (resolved through
torchvision's own enums and loader, so a file already in
``$TORCH_HOME/hub/checkpoints`` loads with no network) and local state-dict
files."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from detcore.errors import CheckpointError, ConfigCheckError
from detcore.models import names
from detcore.weights import (
    check_fit,
    fit_problems,
    load_matching,
    read_state_dict,
    upgrade_legacy_keys,
)

log = logging.getLogger("detcore")

_SKIP = contextvars.ContextVar("detcore_skip_pretrained", default=False)


@contextlib.contextmanager
def skip_pretrained() -> Iterator[None]:
    """Within this block, factories build models without loading any
    pretrained ``weights`` (backbone or detector): detcore builds under it
    whenever a full checkpoint is loaded right after building (``--resume``,
    ``load_from``, ``detcore test``/``predict``/``export``), so the
    pretrained file need not be present."""
    token = _SKIP.set(True)
    try:
        yield
    finally:
        _SKIP.reset(token)


def pretrained_skipped() -> bool:
    """True inside :func:`skip_pretrained`: a factory that loads pretrained
    weights itself should then leave them out."""
    return _SKIP.get()


def hub_file(url: str) -> Path:
    """Where torchvision's loader looks for (and caches) the file of ``url``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


def torchvision_state_dict(full_name: str) -> tuple[dict, str]:
    """``(state dict, file)`` of a torchvision weights entry such as
    ``"ResNet50_Weights.IMAGENET1K_V1"``, loaded with torchvision's loader.
    A missing file is downloaded when there is a network; without one the
    error says which file to put where."""
    from torchvision.models import get_weight

    weights = get_weight(full_name)
    path = hub_file(weights.url)
    cached = path.is_file()
    try:
        state = weights.get_state_dict(progress=False, check_hash=not cached)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if cached:
            raise CheckpointError(
                f"weights file {path} ({full_name}) cannot be loaded ({reason}); it is truncated "
                f"or corrupt. Delete it and download {weights.url} again."
            ) from None
        raise CheckpointError(
            f"weights {full_name} are not in {path.parent} and could not be downloaded ({reason}). "
            f"Without network access, download {weights.url} on another machine and put it at "
            f"{path} (the directory is $TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to "
            f"~/.cache/torch)."
        ) from None
    return state, str(path)


_PREFIXES = ("module.", "backbone.body.", "body.", "backbone.")


def _strip_prefix(state: dict, own: dict) -> dict:
    """Drop a wrapper prefix (DDP's ``module.``, a detector's
    ``backbone.body.``) when that makes the keys fit."""
    if any(k in own for k in state):
        return state
    for prefix in _PREFIXES:
        stripped = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if stripped and any(k in own for k in stripped):
            return stripped
    return state


def load_backbone_weights(model, weights: str, arch: str | None, *, head_prefixes: tuple[str, ...] = ()) -> str:
    """Load ``weights`` (a torchvision weights name for ``arch`` or a local
    file) into ``model``, a classification network before its head is cut
    off. Keys must fit exactly, except the classification head
    (``head_prefixes``), which may be absent. Returns the file loaded."""
    if names.looks_like_path(weights):
        state = read_state_dict(weights, "backbone weights")
        source = str(Path(weights).expanduser())
    else:
        names.check_backbone_weights(weights, arch)
        enum = names.BACKBONE_WEIGHTS[arch][0]
        full = weights if "." in weights else f"{enum}.{weights}"
        state, source = torchvision_state_dict(full)
    own = model.state_dict()
    state = _strip_prefix(state, own)
    parts = fit_problems(own, state, missing_exempt=head_prefixes)
    if parts:
        raise CheckpointError(
            f"backbone weights '{source}' do not fit the {arch or type(model).__name__} backbone: "
            f"{'; '.join(parts)}. The file must hold the state dict of the same architecture "
            f"(e.g. torchvision's {arch or 'model'}().state_dict())."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    log.info("loaded backbone weights from %s", source)
    return source


def set_weights_eps(model, detector: str, weights: str, arch: str | None, variant: str) -> None:
    """Give every FrozenBatchNorm2d eps 0 when ``weights`` names torchvision
    COCO weights that its builder loads that way (``overwrite_eps(model,
    0.0)``). Done at build time, also when loading is skipped, so a model
    rebuilt for a checkpoint computes what the trained one did."""
    if names.looks_like_path(weights):
        return
    try:
        enum, _ = names.resolve_detector_weights(detector, weights, arch, variant)
    except ValueError:
        return  # load_detector_weights reports it
    if enum not in names.ZERO_EPS_WEIGHTS:
        return
    from torchvision.ops.misc import FrozenBatchNorm2d

    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.eps = 0.0


def load_detector_weights(model, detector: str, weights: str, arch: str | None, variant: str):
    """Load torchvision COCO weights (or a local file) into a built-in
    detector with :func:`detcore.weights.load_matching`: the class-dependent
    layers are skipped (and reported) when ``num_classes`` differs; anything
    else that does not fit is an error naming the file. Returns the
    :class:`detcore.LoadReport`."""
    if names.looks_like_path(weights):
        state = read_state_dict(weights, "detector weights")
        source = str(Path(weights).expanduser())
    else:
        try:
            enum, entry = names.resolve_detector_weights(detector, weights, arch, variant)
        except ValueError as exc:
            raise ConfigCheckError(str(exc), key="weights") from None
        state, source = torchvision_state_dict(f"{enum}.{entry}")
    state = upgrade_legacy_keys(state, model)
    check_fit(model, state, source, f"{detector} weights")
    report = load_matching(model, state, source)
    log.info(report.summary())
    return report
