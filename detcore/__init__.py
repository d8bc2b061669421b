"""detcore: object-detection training with a thin, pluggable core.

The public API (the names a plugin author or a Python user may rely on) is
what this module lists in :data:`PUBLIC`, plus three public modules:

* ``detcore.errors``: the exceptions (and ``did_you_mean``);
* ``detcore.testing``: the ``detcore_tester`` fixture and ``tiny_run``;
* ``detcore.hookspecs``: the hook specifications (read them, never import
  from them to call anything: they are the contract's reference text).

Every other module (``detcore.catalog``, ``detcore.data.*``,
``detcore.engine.*``, ``detcore.cli.*``, ...) is private, like ``_pytest``
is to ``pytest``: it may change in any release. The bundled plugins import
only the public modules, and ``lint-imports`` (contracts in
``.importlinter``) keeps it that way.

Importing this package is cheap: it pulls in pluggy and nothing heavy. The
names below are re-exported lazily (on first attribute access), so torch,
torchvision and every plugin are imported only when a command needs them.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookspec = pluggy.HookspecMarker("detcore")
hookimpl = pluggy.HookimplMarker("detcore")

# The whole public surface: name -> the private module that defines it.
# When code moves inside detcore, only the right-hand side changes here.
PUBLIC: dict[str, str] = {
    # Writing components: nested component tables, run-file checks, CLI commands.
    "Sub": "detcore.catalog",
    "Spec": "detcore.catalog",
    "check_with": "detcore.catalog",
    "MetricName": "detcore.catalog",
    "CheckContext": "detcore.catalog",
    "Command": "detcore.catalog",
    # Errors (also importable from the public module detcore.errors).
    "DetcoreError": "detcore.errors",
    "RunFileError": "detcore.errors",
    "ConfigCheckError": "detcore.errors",
    "CheckpointError": "detcore.errors",
    "PluginError": "detcore.errors",
    "UsageError": "detcore.errors",
    "did_you_mean": "detcore.errors",
    # Models: a backbone's channels known before it is built; pretrained
    # weights left out while a whole checkpoint is loaded.
    "declare_out_channels": "detcore.models",
    "skip_pretrained": "detcore.models.pretrained",
    "pretrained_skipped": "detcore.models.pretrained",
    # What loading weights did: a detector's ``weights_report``.
    "LoadReport": "detcore.weights",
    # What a plugin dataset needs: read images, build the run file's transforms.
    "read_image": "detcore.data.image_io",
    "image_size": "detcore.data.image_io",
    "ImageReadError": "detcore.data.image_io",
    "build_pipeline": "detcore.data.transforms",
    # Drawing predictions (detcore-hooks' visualize hook, custom tools).
    "image_to_uint8": "detcore.visualize",
    "draw_detections": "detcore.visualize",
    "ground_truth_and_predictions": "detcore.visualize",
    "save_image": "detcore.visualize",
    "class_color": "detcore.visualize",
    # Predictions as COCO results records (a metric's dump, Prediction.to_coco).
    "coco_results": "detcore.predictions",
    # The Python API (docs/python.md); torch is imported on first use.
    "Detector": "detcore.detector",
    "Prediction": "detcore.predictions",
    "ImageInputError": "detcore.errors",
    "TrainResult": "detcore.api",
    "train": "detcore.api",
    "test": "detcore.api",
    # Result figures a metric draws in save_plots() (matplotlib: detcore[plot]).
    "confusion_matrix": "detcore.plots",
    "save_pr_curves": "detcore.plots",
    "save_confusion_matrix": "detcore.plots",
}

__all__ = ["__version__", "hookimpl", "hookspec", *PUBLIC]


def __getattr__(name: str):
    module = PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'detcore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *PUBLIC})
