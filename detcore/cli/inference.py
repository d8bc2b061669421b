"""The ``--device`` option that test, predict and benchmark share.

Loading a model from a run file and a checkpoint (its class names,
evaluation transforms, datasets by split) is :mod:`detcore.engine.inference`;
its names are re-exported here for code that imported them from this module
before they moved there."""

from __future__ import annotations

import argparse

from detcore.engine import inference as _engine
from detcore.engine.inference import *  # noqa: F403 - see the module docstring
from detcore.errors import RunFileError


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the run file's, else auto)")


def pick_device(args, run):
    """The ``torch.device`` from ``--device``, else the run file's ``device``
    (resolved as training resolves it)."""
    from detcore.engine.dist_env import resolve_device
    from detcore.errors import DetcoreError

    try:
        return resolve_device(getattr(args, "device", None) or run.cfg.device, fix="use --device cpu")
    except DetcoreError as exc:  # a usage error here (exit status 2)
        raise RunFileError(str(exc)) from None


__all__ = ["add_device_arg", "pick_device", *_engine.__all__]


def __getattr__(name: str):
    # image_to_uint8 lived here until it became public API (detcore.image_to_uint8).
    if name == "image_to_uint8":
        import warnings

        warnings.warn(
            "detcore.cli.inference.image_to_uint8 is deprecated: use detcore.image_to_uint8",
            DeprecationWarning,
            stacklevel=2,
        )
        from detcore.visualize import image_to_uint8

        return image_to_uint8
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
