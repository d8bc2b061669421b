"""The module the ``timm`` entry point names: the ``timm`` backbone factory
(its signature is the run-file interface), its checks and its declared
output channels.

Light at import: torch and timm are imported when a run file that uses the
backbone is checked (timm's ``feature_info`` of a weightless model built on
the meta device) or built.
"""

from __future__ import annotations

import functools
import os

from detcore import ConfigCheckError, check_with, declare_out_channels, did_you_mean, hookimpl


def is_file_weights(weights: str) -> bool:
    """A ``weights`` string naming a local file rather than a timm pretrained tag."""
    return "/" in weights or os.sep in weights or weights.endswith((".pth", ".pt", ".bin", ".safetensors")) \
        or os.path.exists(weights)


@functools.lru_cache(maxsize=64)
def feature_info(name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(channels, reductions)`` of every feature level timm's
    ``features_only`` model of ``name`` returns, from a model built without
    weights on the meta device (no memory, no download)."""
    import timm
    import torch

    if not timm.is_model(name):
        known = timm.list_models()
        raise ConfigCheckError(f"timm has no model '{name}'{did_you_mean(name, known)}; `python -c \"import timm; "
                               f"print(timm.list_models('{name[:4]}*'))\"` lists similar ones", key="name")
    try:
        with torch.device("meta"):
            model = timm.create_model(name, features_only=True, pretrained=False)
    except Exception as exc:  # timm raises RuntimeError/ValueError/... for models without feature extraction
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigCheckError(f"timm model '{name}' cannot be built with features_only=True ({first})",
                               key="name") from None
    info = model.feature_info
    return tuple(info.channels()), tuple(info.reduction())


def default_out_indices(reductions) -> list[int]:
    """Every feature level at stride 4 or coarser: the stride-2 stem that
    timm's CNNs also return is left out (ResNet: C2-C5, like torchvision's)."""
    return [i for i, r in enumerate(reductions) if r >= 4]


def _out_indices(args: dict) -> list[int]:
    channels, reductions = feature_info(args["name"])
    out = args.get("out_indices")
    if out is None:
        return default_out_indices(reductions)
    out = list(out)
    n = len(channels)
    if not out or sorted(set(out)) != out or out[0] < 0 or out[-1] >= n:
        raise ConfigCheckError(
            f"must be increasing feature indices in 0..{n - 1} for '{args['name']}' (strides "
            f"{list(reductions)}), got {out}",
            key="out_indices",
        )
    return out


def _channels(args: dict) -> list[int]:
    channels, _ = feature_info(args["name"])
    return [channels[i] for i in _out_indices(args)]


def _check(args: dict, ctx) -> None:
    _out_indices(args)  # raises for a bad name or bad indices
    n = len(feature_info(args["name"])[0])
    frozen = args.get("frozen_stages", -1)
    if not -1 <= frozen < n:
        raise ConfigCheckError(f"must be in -1..{n - 1} (-1: nothing frozen), got {frozen}", key="frozen_stages")
    weights = args.get("weights")
    if isinstance(weights, str):
        if is_file_weights(weights):
            if not os.path.isfile(os.path.expanduser(weights)):
                raise ConfigCheckError(f"weights file '{weights}' does not exist", key="weights")
        else:
            import timm

            tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{args['name']}.*")]
            if weights not in tags:
                raise ConfigCheckError(
                    f"timm publishes no weights '{weights}' for {args['name']}{did_you_mean(weights, tags)}; "
                    f"valid tags: {', '.join(tags) or 'none'}; or give a path to a weights file, or true "
                    f"for timm's default",
                    key="weights",
                )


@declare_out_channels(_channels)
@check_with(_check)
def timm_backbone(
    name: str,
    out_indices: list[int] | None = None,
    weights: bool | str = False,
    frozen_stages: int = -1,
    norm_eval: bool = False,
):
    """Any timm model that supports ``features_only``, e.g. ``convnext_tiny``;
    returns the feature levels in ``out_indices`` (timm's feature indices)."""
    from detcore_timm.backbone import build

    return build(name, list(out_indices) if out_indices is not None else None, weights, frozen_stages, norm_eval)


@hookimpl
def detcore_backbones():
    return {"timm": timm_backbone}
