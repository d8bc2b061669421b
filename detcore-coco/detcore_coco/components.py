"""The ``coco`` dataset and ``coco`` metric factories, as run files see them.

Light: signatures and run-file checks only. The dataset and metric classes
(torch, pycocotools) are imported when a factory is called.
"""

from __future__ import annotations

import os
from typing import Literal

from detcore import Sub, check_with
from detcore.errors import ConfigCheckError, shorten

# An alias, not Sub["transform"] inline: linters read a quoted subscript in
# an annotation as a forward reference to a name.
TransformSpec = Sub["transform"]


def _check_dataset(args: dict, ctx) -> None:
    """Run by ``detcore config check`` and before training: the files exist,
    ``classes`` match the file's categories, and some image has an object."""
    from detcore_coco.annfile import (
        AnnotationError,
        ClassNameError,
        annotated_image_count,
        category_ids_for,
        classes_setting,
        empty_categories,
        load_coco_json,
    )

    ann_file, img_dir = args.get("ann_file"), args.get("img_dir")
    cwd = os.getcwd()
    if isinstance(ann_file, str) and not os.path.isfile(ann_file):
        raise ConfigCheckError(
            f"annotation file '{shorten(ann_file)}' not found (relative paths resolve against the current "
            f"directory, {cwd})",
            key="ann_file",
        )
    if isinstance(img_dir, str) and not os.path.isdir(img_dir):
        raise ConfigCheckError(
            f"image directory '{shorten(img_dir)}' not found (relative paths resolve against the current "
            f"directory, {cwd})",
            key="img_dir",
        )
    if not isinstance(ann_file, str):
        return
    try:
        data = load_coco_json(ann_file)
    except AnnotationError as exc:
        raise ConfigCheckError(str(exc), key="ann_file") from None
    classes = args.get("classes")
    try:
        cat_ids, names = category_ids_for(data, classes, ann_file)
    except ClassNameError as exc:
        raise ConfigCheckError(str(exc), key="classes") from None
    # For the checks between tables: model.num_classes, a mask detector.
    ctx.declare(class_names=names, masks=bool(args.get("with_masks", False)), masks_key="with_masks")
    if not data["images"]:
        raise ConfigCheckError(f"annotation file '{ann_file}' lists no images", key="ann_file")
    if classes is None and _is_train_split(ctx):
        empty, annotated = empty_categories(data)
        # Only a category that is the supercategory of others (Roboflow's id 0
        # "pieces") is refused: a subset of a bigger set (coco128 lacks 9 of
        # COCO's classes) legitimately has classes without annotations, and
        # `coco check` lists those as warnings.
        parents = {c.get("supercategory") for c in data["categories"]}
        empty = [c for c in empty if c.get("name") in parents]
        if empty and annotated:
            listed = ", ".join(f"id {c['id']} '{c.get('name')}'" for c in empty)
            raise ConfigCheckError(
                f"{len(empty)} categor{'y' if len(empty) == 1 else 'ies'} of '{ann_file}' "
                f"{'has' if len(empty) == 1 else 'have'} no annotations at all ({listed}; e.g. an "
                f"export's supercategory) and would become classes the model learns never to predict. "
                f"Leave {'it' if len(empty) == 1 else 'them'} out by listing the classes to train: "
                f"{classes_setting(annotated)}",
                key="classes",
            )
    if annotated_image_count(data, cat_ids) == 0:
        which = f"of the classes {names}" if classes is not None else "at all"
        raise ConfigCheckError(
            f"none of the {len(data['images'])} images of '{ann_file}' has an annotation {which}; "
            f"training would see no objects. Check 'classes' against the file's categories "
            f"({', '.join(str(c['name']) for c in data['categories'])}) and that the file is the "
            f"one you meant.",
            key="classes" if classes is not None else "ann_file",
        )


def _is_train_split(ctx) -> bool:
    # "data.train", or a wrapper's inner table ("data.train.dataset"); a
    # val/test split may well lack a rare class
    return ".train." in f".{getattr(ctx, 'path', '')}."


@check_with(_check_dataset)
def coco(
    ann_file: str,
    img_dir: str,
    classes: list[str] | None = None,
    transforms: list[TransformSpec] = [],  # noqa: B006 - never mutated
    filter_empty: bool = False,
    min_size: int = 0,
    with_masks: bool = False,
    keep_crowd: bool = True,
    skip_bad_images: bool = False,
):
    """A COCO-format detection dataset (pycocotools)."""
    from detcore_coco.dataset import CocoDataset

    return CocoDataset(
        ann_file,
        img_dir,
        classes=classes,
        transforms=transforms,
        filter_empty=filter_empty,
        min_size=min_size,
        with_masks=with_masks,
        keep_crowd=keep_crowd,
        skip_bad_images=skip_bad_images,
    )


def _check_metric(args: dict, ctx) -> None:
    iou_types = args.get("iou_types", ["bbox"])
    if isinstance(iou_types, list):
        if not iou_types:
            raise ConfigCheckError("iou_types must name at least one of 'bbox', 'segm'", key="iou_types")
        if len(set(iou_types)) != len(iou_types):
            raise ConfigCheckError(f"iou_types repeats an entry: {iou_types}", key="iou_types")
        # The keys evaluate() returns (checkpoint.save_best, early_stopping's
        # metric are checked against them): pycocotools' 12 numbers per IoU
        # type, and with classwise <iou_type>_AP_<class name>.
        from detcore_coco.stats import stat_keys

        keys = [k for t in iou_types for k in stat_keys(t)]
        ctx.declare(keys=keys + ([f"{t}_AP_*" for t in iou_types] if args.get("classwise") else []))
    if args.get("backend") == "faster_coco_eval":
        import importlib.util

        if importlib.util.find_spec("faster_coco_eval") is None:
            raise ConfigCheckError(
                "backend 'faster_coco_eval' needs the faster-coco-eval package: "
                "pip install 'detcore-coco[fast]' (or use backend = \"auto\")",
                key="backend",
            )


@check_with(_check_metric)
def coco_metric(
    iou_types: list[Literal["bbox", "segm"]] = ["bbox"],  # noqa: B006 - never mutated
    classwise: bool = False,
    outfile_prefix: str | None = None,
    backend: Literal["auto", "pycocotools", "faster_coco_eval"] = "auto",
):
    """COCO mAP through pycocotools' COCOeval (or faster-coco-eval)."""
    from detcore_coco.metric import CocoMetric

    return CocoMetric(iou_types=iou_types, classwise=classwise, outfile_prefix=outfile_prefix, backend=backend)
