"""detcore-voc's plugin module (entry point ``voc`` in the ``detcore`` group).

Light: factories and their run-file checks; torch and numpy are imported
when a factory is called.
"""

from __future__ import annotations

import os
from pathlib import Path

from detcore import ConfigCheckError, Sub, check_with, hookimpl

TransformSpec = Sub["transform"]


def _check_voc(args: dict, ctx) -> None:
    root, split = args.get("root"), args.get("split", "trainval")
    if not isinstance(root, str):
        return
    base = Path(root)
    if not base.is_dir():
        raise ConfigCheckError(
            f"VOC folder '{root}' not found (relative paths resolve against {os.getcwd()})", key="root"
        )
    for sub in ("Annotations", args.get("img_dir", "JPEGImages")):
        if isinstance(sub, str) and not (base / sub).is_dir():
            raise ConfigCheckError(f"'{root}' has no {sub}/ folder: is it a VOC folder?", key="root")
    split_file = base / "ImageSets" / "Main" / f"{split}.txt"
    if isinstance(split, str) and not split_file.is_file():
        found = sorted(p.stem for p in (base / "ImageSets" / "Main").glob("*.txt"))
        from detcore.errors import did_you_mean

        raise ConfigCheckError(
            f"no split '{split}' in {base / 'ImageSets' / 'Main'}{did_you_mean(split, found)}; "
            f"splits: {', '.join(found) or 'none'}",
            key="split",
        )
    classes = args.get("classes")
    if isinstance(classes, list) and len(set(classes)) != len(classes):
        raise ConfigCheckError(f"classes repeats a name: {classes}", key="classes")
    # VOC has boxes only; the classes are known here only when listed.
    ctx.declare(masks=False, **({"class_names": classes} if isinstance(classes, list) else {}))


@check_with(_check_voc)
def voc(
    root: str,
    split: str = "trainval",
    classes: list[str] | None = None,
    transforms: list[TransformSpec] = [],  # noqa: B006 - never mutated
    keep_difficult: bool = False,
    filter_empty: bool = False,
    img_dir: str = "JPEGImages",
):
    """A Pascal VOC folder (``Annotations/``, ``JPEGImages/``,
    ``ImageSets/Main/<split>.txt``); ``classes`` default to VOC's 20 when the
    XML names are all VOC classes, else the names found, sorted."""
    from detcore_voc.annotations import VocFormatError
    from detcore_voc.dataset import VocDataset

    try:
        return VocDataset(
            root,
            split,
            classes=classes,
            transforms=transforms,
            keep_difficult=keep_difficult,
            filter_empty=filter_empty,
            img_dir=img_dir,
        )
    except VocFormatError as exc:
        raise ConfigCheckError(str(exc), key="root") from None


def _check_metric(args: dict, ctx) -> None:
    thr = args.get("iou_thr", 0.5)
    if isinstance(thr, (int, float)) and not 0 < thr < 1:
        raise ConfigCheckError(f"iou_thr must be in (0, 1), got {thr}", key="iou_thr")
    # The keys evaluate() returns, for checkpoint.save_best and early stopping.
    ctx.declare(keys=["voc_mAP", "voc_mAP_11pt", *(["voc_AP/*"] if args.get("classwise", True) else [])])


@check_with(_check_metric)
def voc_metric(iou_thr: float = 0.5, legacy_coordinates: bool = False, classwise: bool = True):
    """VOC mAP at ``iou_thr``: ``voc_mAP`` (area, VOC2010+), ``voc_mAP_11pt``
    (VOC2007) and ``voc_AP/<class>``. ``legacy_coordinates`` uses the devkit's
    +1-pixel box sizes."""
    from detcore_voc.metric import VocMetric

    return VocMetric(iou_thr=iou_thr, legacy_coordinates=legacy_coordinates, classwise=classwise)


@hookimpl
def detcore_datasets():
    return {"voc": voc}


@hookimpl
def detcore_metrics():
    return {"voc": voc_metric}
