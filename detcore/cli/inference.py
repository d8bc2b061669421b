"""What test, predict, benchmark, export and browse-dataset share: the
``--device`` option, and (from :mod:`detcore.engine.inference`) a model built
from a run file with a checkpoint's weights, its class names, evaluation
transforms, and datasets by split."""

from __future__ import annotations

import argparse

# The model-loading helpers live in detcore.engine.inference (the Python API
# uses them too); the CLI tools import them from here.
from detcore.engine.inference import (
    build_dataset,
    build_model,
    cat_ids_of,
    class_names_of,
    eval_pipeline,
    load_model,
    split_table,
)
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


__all__ = [
    "add_device_arg",
    "build_dataset",
    "build_model",
    "cat_ids_of",
    "class_names_of",
    "eval_pipeline",
    "load_model",
    "pick_device",
    "split_table",
]


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
