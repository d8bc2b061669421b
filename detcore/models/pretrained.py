"""Pretrained weights: torchvision weights names (resolved through
torchvision's own enums and loader, so a file already in
``$TORCH_HOME/hub/checkpoints`` loads with no network) and local state-dict
files."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from detcore.errors import CheckpointError, ConfigCheckError
from detcore.models import names

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


def read_state_dict(path: str | os.PathLike, what: str = "weights") -> dict:
    """A state dict from a local file: a bare state dict, or a checkpoint
    with a ``state_dict`` or ``model`` entry."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"{what} file '{path}' does not exist. Give a path to a state-dict file "
            f"(torch.save(model.state_dict(), path)) or a torchvision weights name."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{what} file '{path}' cannot be loaded ({type(exc).__name__}: {first}); it is "
            f"truncated, corrupt or not written by torch.save."
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{what} file '{path}' holds {type(obj).__name__}, not a state dict (a dict of tensors)."
        )
    return obj


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
    # FrozenBatchNorm2d has no num_batches_tracked; BatchNorm2d files do.
    ignorable = ("num_batches_tracked",)
    missing = [k for k in own if k not in state and not k.startswith(head_prefixes)
               and not k.endswith(ignorable)]
    unexpected = [k for k in state if k not in own and not k.endswith(ignorable)]
    shape = [
        f"{k} ({list(state[k].shape)} in file, {list(own[k].shape)} in model)"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shape:
        parts = []
        if shape:
            parts.append(f"shapes differ for {len(shape)} tensors (e.g. {'; '.join(shape[:3])})")
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(
            f"backbone weights '{source}' do not fit the {arch or type(model).__name__} backbone: "
            f"{'; '.join(parts)}. The file must hold the state dict of the same architecture "
            f"(e.g. torchvision's {arch or 'model'}().state_dict())."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    log.info("loaded backbone weights from %s", source)
    return source


# torchvision renamed some detection layers when it moved to
# Conv2dNormActivation; its modules rename old keys in _load_from_state_dict
# hooks. Checkpoints published before that (the COCO_V1 files among them)
# carry the old names, so keys are upgraded the same way before comparing.
_LEGACY_RULES = [
    (re.compile(r"^(.*\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$"), lambda m: f"{m[1]}.0.{m[2]}"),
    (re.compile(r"^(.*rpn\.head\.conv)\.(weight|bias)$"), lambda m: f"{m[1]}.0.0.{m[2]}"),
    (re.compile(r"^(.*mask_head)\.mask_fcn(\d+)\.(weight|bias)$"),
     lambda m: f"{m[1]}.{int(m[2]) - 1}.0.{m[3]}"),
    (re.compile(r"^(.*(?:classification|regression)_head\.conv)\.(\d+)\.(weight|bias)$"),
     lambda m: f"{m[1]}.{int(m[2]) // 2}.0.{m[3]}" if int(m[2]) % 2 == 0 else m[0]),
]


def upgrade_legacy_keys(state: dict, model) -> dict:
    """``state`` with torchvision's pre-0.13 detection key names renamed to
    the current ones where that makes them fit ``model`` (what torchvision's
    own ``_load_from_state_dict`` hooks do)."""
    own = model.state_dict()
    if all(k in own for k in state):
        return state
    out = {}
    for key, value in state.items():
        if key not in own:
            for pattern, rename in _LEGACY_RULES:
                m = pattern.match(key)
                if m and rename(m) in own and rename(m) not in state:
                    key = rename(m)
                    break
        out[key] = value
    return out


def check_fit(model, state: dict, source: str, what: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` fits ``model`` key for
    key, apart from the class-dependent layers (``model.class_layers``, key
    prefixes), whose shapes may differ when ``num_classes`` does."""
    own = model.state_dict()
    class_layers = tuple(getattr(model, "class_layers", ()))
    ignorable = ("num_batches_tracked",)  # BatchNorm vs FrozenBatchNorm2d
    shape = [
        f"{k} ({list(v.shape)} in file, {list(own[k].shape)} in model)"
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
        and not k.startswith(class_layers)
    ]
    missing = [k for k in own if k not in state and not k.endswith(ignorable)]
    unexpected = [k for k in state if k not in own and not k.endswith(ignorable)]
    if shape or missing or unexpected:
        parts = []
        if shape:
            parts.append(f"shapes differ for {len(shape)} tensors (e.g. {'; '.join(shape[:3])})")
        if missing:
            parts.append(f"{len(missing)} model tensors are not in the file (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors of the file are not in the model (e.g. "
                         f"{', '.join(unexpected[:3])})")
        raise CheckpointError(
            f"{what} '{source}' do not fit this {type(model).__name__}: {'; '.join(parts)}. Only the "
            f"class-dependent layers ({', '.join(class_layers) or 'none'}) may differ; use weights of "
            f"the same architecture (backbone, neck, heads, variant)."
        )


def load_detector_weights(model, detector: str, weights: str, arch: str | None, variant: str):
    """Load torchvision COCO weights (or a local file) into a built-in
    detector with :func:`detcore.weights.load_matching`: the class-dependent
    layers are skipped (and reported) when ``num_classes`` differs; anything
    else that does not fit is an error naming the file. Returns the
    :class:`~detcore.weights.LoadReport`."""
    from detcore.weights import load_matching

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
