"""Weights and checkpoint files: reading them, picking the model's state
dict out of them, and loading it into a model.

* :func:`read_checkpoint` / :func:`read_state_dict`: one reader for every
  file detcore loads (training checkpoints, ``load_from``, a backbone's or a
  detector's ``weights`` file), with one-paragraph errors naming the file.
* :func:`weights_of`: the state dict inside a detcore, torchvision or plain
  checkpoint.
* :func:`load_matching` (with a :class:`LoadReport`), :func:`check_fit` and
  :func:`upgrade_legacy_keys`: loading a state dict that only partly fits
  (class-dependent layers after changing ``num_classes``), and
  torchvision's pre-0.13 key names.
* :func:`load_weights`: ``load_from`` (all of the above).

Which pretrained weights a ``weights = "NAME"`` means (torchvision's enums
and hub cache) is :mod:`detcore.models.pretrained`; the work dir's checkpoint
files (names, ``latest.json``, resume) are :mod:`detcore.engine.checkpoint`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs

from detcore.errors import CheckpointError, shorten
from detcore.integrity import verify

__all__ = [
    "LoadReport",
    "check_fit",
    "fit_problems",
    "load_matching",
    "load_weights",
    "read_checkpoint",
    "read_state_dict",
    "upgrade_legacy_keys",
    "weights_of",
]


def read_checkpoint(path: str | Path, what: str = "checkpoint", *, missing_hint: str = "") -> dict:
    """A checkpoint or weights file as a dict, loaded with
    ``weights_only=True`` and its integrity digest verified when it has one
    (:mod:`detcore.integrity`); a missing, truncated, altered or foreign file raises
    :class:`CheckpointError` naming it (``what``: how the message calls the
    file; ``missing_hint``: appended when it does not exist)."""
    import torch

    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(_folder_message(path, what))
    if not path.is_file():
        raise CheckpointError(f"{what} '{path}' does not exist{missing_hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(_load_failure_message(path, exc, what)) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{what} '{path}' holds a {type(ckpt).__name__}, not a dict")
    verify(ckpt, path)
    return ckpt


EXPECTED = (
    "detcore expects a checkpoint written by 'detcore train' (epoch_N.pth, iter_N.pth, best_*.pth in "
    "the work dir), a torchvision checkpoint, or a state dict saved with torch.save(model.state_dict())"
)


def _folder_message(path: Path, what: str) -> str:
    found = sorted(path.glob("*.pth"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    if found:
        listed = ", ".join(f"'{p}'" for p in found[:3])
        return f"{what} '{path}' is a folder, not a file; give one of its checkpoints (newest first): {listed}"
    return f"{what} '{path}' is a folder with no checkpoint (.pth) in it; give a checkpoint file"


def _load_failure_message(path: Path, exc: Exception, what: str) -> str:
    """Why torch.load(weights_only=True) refused ``path``, in detcore's words.
    torch's own text for a pickled object is a multi-line recipe that ends by
    suggesting weights_only=False (running the file's code): never pass it on."""
    text = str(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return (
            f"{what} '{path}' is not a detcore checkpoint: it holds pickled Python objects (such as "
            f"{unsupported.group(1)}; e.g. a whole model saved with torch.save(model)), and detcore loads only "
            f"tensors and plain data, since unpickling objects can run code. {EXPECTED}."
        )
    if "WeightsUnpickler error:" in text:  # keep torch's reason, drop its advice
        text = text.split("WeightsUnpickler error:", 1)[1].split(". ")[0]
    reason = shorten(" ".join(text.split()), 200)
    return (
        f"{what} '{path}' cannot be loaded ({type(exc).__name__}: {reason}): it is truncated, corrupt, "
        f"or not a PyTorch file. {EXPECTED}."
    )


def read_state_dict(path: str | os.PathLike, what: str = "weights") -> dict:
    """The model weights in a local file: a bare state dict, or a
    checkpoint with a ``model``, ``state_dict`` or ``model_state_dict``
    entry (:func:`weights_of`, the training weights rather than an EMA)."""
    ckpt = read_checkpoint(
        path,
        f"{what} file",
        missing_hint=". Give a path to a state-dict file (torch.save(model.state_dict(), path)) or a "
        "torchvision weights name.",
    )
    return weights_of(ckpt, f"{what} file '{Path(path).expanduser()}'", prefer_eval=False)


def weights_of(ckpt: dict, source: str = "checkpoint", *, prefer_eval: bool = True) -> dict:
    """The model state dict in ``ckpt``: a detcore checkpoint's ``eval_model``
    (the weights validation used, e.g. an EMA; unless ``prefer_eval`` is
    false) or ``model``, a
    ``state_dict`` or ``model`` entry (other frameworks, torchvision's
    reference scripts), or ``ckpt`` itself when it is a plain state dict
    (torchvision's published weights). A ``module.`` prefix (DDP) is
    removed."""
    import torch

    state = ckpt
    keys = ("eval_model",) if prefer_eval else ()
    for key in (*keys, "model", "state_dict", "model_state_dict"):
        if isinstance(ckpt.get(key), dict):
            state = ckpt[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            f"'{source}' holds no model weights (keys: {', '.join(list(map(str, ckpt))[:8])}); give a detcore "
            f"checkpoint, a torchvision checkpoint or a state dict saved with torch.save(model.state_dict())"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_weights(model, path: str | Path):
    """Load ``path`` (detcore checkpoint, torchvision checkpoint or state
    dict) into ``model`` with :func:`load_matching`: tensors
    whose shape differs (class-dependent heads after changing
    ``num_classes``) are skipped and reported, not fatal. A file sharing no
    tensor with the model is an error. Torchvision's pre-0.13 key names are
    renamed first; for a model that names its class-dependent layers
    (``model.class_layers``, detcore's detectors) every other tensor must fit
    (:func:`check_fit`)."""
    ckpt = read_checkpoint(path)
    state = weights_of(ckpt, str(path))
    # torchvision's published COCO files use pre-0.13 key names for the FPN,
    # RPN conv and mask head: rename them, as torchvision's loader does.
    state = upgrade_legacy_keys(state, model)
    own = model.state_dict()
    if not any(k in own for k in state):
        raise CheckpointError(
            f"load_from '{path}': none of its {len(state)} tensors fits the model (file keys like "
            f"{', '.join(list(state)[:3])}; model keys like {', '.join(list(own)[:3])}). It is a checkpoint of "
            f"another architecture; pick one trained with this detector."
        )
    if hasattr(model, "class_layers"):
        # The model names its class-dependent layers: anything else that does
        # not fit is a wrong file, not a head to re-initialise.
        check_fit(model, state, str(path), "load_from")
    return load_matching(model, state, str(path))


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


def fit_problems(own: dict, state: dict, *, shape_exempt: tuple[str, ...] = (),
                 missing_exempt: tuple[str, ...] = ()) -> list[str]:
    """What keeps ``state`` from fitting the state dict ``own`` key for key
    (empty: it fits): shapes that differ (except keys starting with
    ``shape_exempt``), model tensors absent from the file (except keys
    starting with ``missing_exempt``), file tensors the model lacks.
    ``num_batches_tracked`` is ignored (BatchNorm vs FrozenBatchNorm2d)."""
    ignorable = ("num_batches_tracked",)
    shape = [
        f"{k} ({list(v.shape)} in file, {list(own[k].shape)} in model)"
        for k, v in state.items()
        if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)
        and not k.startswith(shape_exempt)
    ]
    missing = [k for k in own if k not in state and not k.endswith(ignorable) and not k.startswith(missing_exempt)]
    unexpected = [k for k in state if k not in own and not k.endswith(ignorable)]
    parts = []
    if shape:
        parts.append(f"shapes differ for {len(shape)} tensors (e.g. {'; '.join(shape[:3])})")
    if missing:
        parts.append(f"{len(missing)} tensors missing (in the model, not in the file; e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(
            f"{len(unexpected)} unexpected tensors (in the file, not in the model; e.g. {', '.join(unexpected[:3])})"
        )
    return parts


def check_fit(model, state: dict, source: str, what: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` fits ``model`` key for
    key, apart from the class-dependent layers (``model.class_layers``, key
    prefixes), whose shapes may differ when ``num_classes`` does."""
    class_layers = tuple(getattr(model, "class_layers", ()))
    parts = fit_problems(model.state_dict(), state, shape_exempt=class_layers)
    if parts:
        raise CheckpointError(
            f"{what} '{source}' do not fit this {type(model).__name__}: {'; '.join(parts)}. Only the "
            f"class-dependent layers ({', '.join(class_layers) or 'none'}) may differ; use weights of "
            f"the same architecture (backbone, neck, heads, variant)."
        )


@attrs.frozen
class LoadReport:
    """What loading a state dict into a model did, for the run's log
    (``summary()``) and for tests: the keys ``loaded``, those left out because
    their shape differs (``skipped_shape``: ``(key, shape in file, shape in
    model)``, e.g. the class-dependent layers after changing
    ``num_classes``), and the ``missing`` / ``unexpected`` keys.

    A detector's ``weights_report`` (hookspecs) is one of these.
    ``skipped_as`` is how ``summary()`` names the shape-skipped tensors: a
    loader that re-initialises them for the new classes says so
    (``skipped_as=("re-initialised", "for the new classes")``)."""

    source: str
    loaded: tuple[str, ...]
    skipped_shape: tuple[tuple[str, tuple, tuple], ...]  # (key, file shape, model shape)
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    skipped_as: tuple[str, str] = ("skipped", "for shape")  # (verb, why) in summary()

    def summary(self) -> str:
        verb, why = self.skipped_as
        lines = [
            f"loaded weights from {self.source}: {len(self.loaded)} tensors loaded, "
            f"{len(self.skipped_shape)} {verb} {why}, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected"
        ]
        for key, src, dst in self.skipped_shape:
            lines.append(f"  {verb} (shape {list(src)} in file, {list(dst)} in model): {key}")
        if self.missing:
            lines.append(f"  missing (left as initialised): {', '.join(self.missing[:20])}"
                         + (" ..." if len(self.missing) > 20 else ""))
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {', '.join(self.unexpected[:20])}"
                         + (" ..." if len(self.unexpected) > 20 else ""))
        return "\n".join(lines)


def load_matching(model, state_dict: dict, source: str) -> LoadReport:
    """Copy every tensor of ``state_dict`` whose key and shape match ``model``'s."""
    import torch

    own = model.state_dict()
    loadable, skipped = {}, []
    for key, value in state_dict.items():
        if key not in own or not isinstance(value, torch.Tensor):
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            skipped.append((key, tuple(value.shape), tuple(own[key].shape)))
            continue
        loadable[key] = value
    result = model.load_state_dict(loadable, strict=False)
    skipped_keys = {k for k, _, _ in skipped}
    return LoadReport(
        source=str(source),
        loaded=tuple(loadable),
        skipped_shape=tuple(skipped),
        missing=tuple(k for k in result.missing_keys if k not in skipped_keys),
        # BatchNorm files hold num_batches_tracked, FrozenBatchNorm2d models do not.
        unexpected=tuple(k for k in state_dict if k not in own and not k.endswith("num_batches_tracked")),
    )
