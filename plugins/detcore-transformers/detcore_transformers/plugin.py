"""The module the ``transformers`` entry point names: the detector factories
(their signatures are the run-file interface) and the hook implementations.

Light on purpose: ``detcore --help`` and ``detcore config check`` import it,
so torch and transformers are imported inside the factories only.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from detcore import ConfigCheckError, check_with, hookimpl

# Architecture presets per detector (``size``), as the authors' configs and
# transformers' conversion scripts define them; the first is the default.
SIZES = {
    "dfine": ("s", "n", "m", "l", "x"),
    "rtdetr_v2": ("r18", "r34", "r50", "r50_m", "r101"),
    "deformable_detr": ("r50",),
    "detr": ("r50", "r101"),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def weights_source(weights: str) -> str:
    """``"dir"`` for a local directory written by ``save_pretrained``,
    ``"hub"`` for a Hugging Face Hub id (``owner/name``); raises
    ``ConfigCheckError`` (key ``weights``) for anything else."""
    path = os.path.expanduser(weights)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigCheckError(
                f"directory '{weights}' has no config.json: it is not a model saved with save_pretrained(). "
                f"Give such a directory or a Hugging Face Hub id like 'ustc-community/dfine-small-coco'",
                key="weights",
            )
        return "dir"
    looks_local = weights.startswith((".", "/", "~")) or os.sep in weights.replace("/", "") or weights.count("/") > 1
    if looks_local or not _HUB_ID.match(weights):
        raise ConfigCheckError(
            f"'{weights}' is neither a directory nor a Hugging Face Hub id (owner/name, e.g. "
            f"'ustc-community/dfine-small-coco'); give the directory save_pretrained() wrote, or a hub id",
            key="weights",
        )
    return "hub"


def _check(detector: str):
    def check(args: dict, ctx) -> None:
        if args.get("num_classes", 1) < 1:
            raise ConfigCheckError(f"must be >= 1, got {args['num_classes']}", key="num_classes")
        if args.get("weights") is not None:
            weights_source(args["weights"])
            if args.get("size") is not None:
                raise ConfigCheckError(
                    "give size or weights, not both: with weights the architecture comes from the weights' "
                    "config.json",
                    key="size",
                )
        size = args.get("input_size")
        if size is not None and (len(size) != 2 or any(s < 32 for s in size)):
            raise ConfigCheckError(f"must be [height, width], each >= 32, got {size}", key="input_size")
        for key in ("min_size", "max_size", "detections_per_img", "size_divisible"):
            value = args.get(key)
            if value is not None and value < 1:
                raise ConfigCheckError(f"must be >= 1, got {value}", key=key)
        thresh = args.get("score_thresh")
        if thresh is not None and not 0 <= thresh <= 1:
            raise ConfigCheckError(f"must be in [0, 1], got {thresh}", key="score_thresh")
        for key in ("image_mean", "image_std"):
            value = args.get(key)
            if value is not None and len(value) != 3:
                raise ConfigCheckError(f"must be 3 numbers (R, G, B), got {value}", key=key)
        if any(s == 0 for s in args.get("image_std") or ()):
            raise ConfigCheckError("must not contain 0", key="image_std")

    return check


def _build(detector: str, args: dict):
    from detcore_transformers.detector import build_detector

    return build_detector(detector, **args)


@check_with(_check("dfine"))
def dfine(
    num_classes: int,
    size: Literal["n", "s", "m", "l", "x"] | None = None,
    weights: str | None = None,
    config: dict | None = None,
    input_size: list[int] | None = (640, 640),
    size_divisible: int = 32,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    score_thresh: float = 0.0,
    detections_per_img: int = 100,
):
    """D-FINE (Peng et al. 2024), transformers' ``DFineForObjectDetection``:
    a real-time DETR with fine-grained distribution refinement."""
    return _build("dfine", dict(locals()))


@check_with(_check("rtdetr_v2"))
def rtdetr_v2(
    num_classes: int,
    size: Literal["r18", "r34", "r50", "r50_m", "r101"] | None = None,
    weights: str | None = None,
    config: dict | None = None,
    input_size: list[int] | None = (640, 640),
    size_divisible: int = 32,
    image_mean: list[float] | None = None,
    image_std: list[float] | None = None,
    score_thresh: float = 0.0,
    detections_per_img: int = 100,
):
    """RT-DETRv2 (Lv et al. 2024), transformers' ``RTDetrV2ForObjectDetection``."""
    return _build("rtdetr_v2", dict(locals()))


@check_with(_check("deformable_detr"))
def deformable_detr(
    num_classes: int,
    size: Literal["r50"] | None = None,
    weights: str | None = None,
    config: dict | None = None,
    min_size: int | None = 800,
    max_size: int = 1333,
    image_mean: list[float] | None = (0.485, 0.456, 0.406),
    image_std: list[float] | None = (0.229, 0.224, 0.225),
    score_thresh: float = 0.0,
    detections_per_img: int = 100,
):
    """Deformable DETR (Zhu et al. 2021), transformers' ``DeformableDetrForObjectDetection``."""
    return _build("deformable_detr", dict(locals()))


@check_with(_check("detr"))
def detr(
    num_classes: int,
    size: Literal["r50", "r101"] | None = None,
    weights: str | None = None,
    config: dict | None = None,
    min_size: int | None = 800,
    max_size: int = 1333,
    image_mean: list[float] | None = (0.485, 0.456, 0.406),
    image_std: list[float] | None = (0.229, 0.224, 0.225),
    score_thresh: float = 0.0,
    detections_per_img: int = 100,
):
    """DETR (Carion et al. 2020), transformers' ``DetrForObjectDetection``."""
    return _build("detr", dict(locals()))


@hookimpl
def detcore_detectors():
    return {"dfine": dfine, "rtdetr_v2": rtdetr_v2, "deformable_detr": deformable_detr, "detr": detr}


@hookimpl
def detcore_before_run(runner) -> None:
    # The dataset's class names become the transformers config's id2label,
    # so a model exported with save_pretrained() names its classes.
    set_names = getattr(runner.model, "set_class_names", None)
    if callable(set_names) and runner.class_names:
        set_names(list(runner.class_names))
