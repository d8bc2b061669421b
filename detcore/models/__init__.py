"""detcore's built-in model code: backbones, necks, heads and detectors on
torchvision's detection building blocks.

This package's ``__init__`` and :mod:`detcore.models.names` are light (no
torch); :mod:`~detcore.models.backbones`, :mod:`~detcore.models.necks`,
:mod:`~detcore.models.heads`, :mod:`~detcore.models.detectors` and
:mod:`~detcore.models.pretrained` import torch and torchvision. The run-file
factories that build them live in :mod:`detcore.builtin.models`.
"""

from __future__ import annotations

from collections.abc import Callable


def declare_out_channels(fn: Callable[[dict], list]):
    """Decorator for a backbone factory: ``fn(args)`` returns the channel count
    of each feature map the backbone will return, computed from its run-file
    arguments alone (no torch). Detectors use it to check a neck's
    ``in_channels`` while the run file is validated, before anything is built.
    """

    def decorate(factory):
        factory.__detcore_out_channels__ = fn
        return factory

    return decorate


def out_channels_of(factory, args: dict) -> list | None:
    """The declared output channels of a backbone factory for ``args``, or
    ``None`` when the backbone does not declare them (or they depend on
    something the arguments do not say)."""
    fn = getattr(factory, "__detcore_out_channels__", None)
    if fn is None:
        return None
    try:
        return fn(args)
    except Exception:
        return None
