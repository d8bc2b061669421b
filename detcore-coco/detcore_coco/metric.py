"""The ``coco`` metric: COCO mAP with pycocotools' COCOeval (or faster-coco-eval)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from detcore import coco_results
from detcore.errors import DetcoreError
from detcore_coco.stats import STAT_NAMES, stat_keys  # noqa: F401 - STAT_NAMES re-exported

logger = logging.getLogger("detcore.coco")


# How COCOeval.summarize() describes each of them: (what, IoU, area, maxDets).
_SUMMARY_LINES = (
    ("Average Precision", "0.50:0.95", "all", 100),
    ("Average Precision", "0.50", "all", 100),
    ("Average Precision", "0.75", "all", 100),
    ("Average Precision", "0.50:0.95", "small", 100),
    ("Average Precision", "0.50:0.95", "medium", 100),
    ("Average Precision", "0.50:0.95", "large", 100),
    ("Average Recall", "0.50:0.95", "all", 1),
    ("Average Recall", "0.50:0.95", "all", 10),
    ("Average Recall", "0.50:0.95", "all", 100),
    ("Average Recall", "0.50:0.95", "small", 100),
    ("Average Recall", "0.50:0.95", "medium", 100),
    ("Average Recall", "0.50:0.95", "large", 100),
)


def _write_json(path: str, records: list[dict]) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(records, f)
    return f"{path} ({len(records)} records, COCO results format)"


def resolve_backend(backend: str) -> str:
    if backend == "auto":
        import importlib.util

        return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"
    return backend


def to_coco_results(predictions: list[dict], cat_ids: list[int], iou_type: str, images: dict | None = None) -> list[dict]:
    """COCO results records (``loadRes`` input) from per-image predictions
    (xyxy boxes in original pixels, 0-based labels; masks for ``segm``),
    written by :func:`detcore.coco_results` once each prediction is checked
    against the dataset: ``images`` (the ground truth's ``coco.imgs``) lets it
    name predictions for unknown images and masks of the wrong size."""
    for pred in predictions:
        _check_prediction(pred, len(cat_ids), iou_type, images)
    return coco_results(predictions, cat_ids, iou_type)


def _check_prediction(pred: dict, num_classes: int, iou_type: str, images: dict | None) -> None:
    image_id = int(pred["image_id"])
    if images is not None and image_id not in images:
        raise DetcoreError(
            f"coco metric: a prediction is for image_id {image_id}, which is not in the "
            f"dataset's annotation file; predictions must come from the dataset evaluated"
        )
    labels = pred["labels"]
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DetcoreError(
            f"coco metric: image {image_id} has a predicted label {int(labels.max())} but the "
            f"dataset has {num_classes} classes; the model's num_classes does not match the data"
        )
    if iou_type != "segm" or not len(labels):
        return
    if "masks" not in pred:
        raise DetcoreError(
            "coco metric: iou_types includes 'segm' but the predictions carry no masks; "
            "use a detector that predicts masks (mask_rcnn) or iou_types = [\"bbox\"]"
        )
    if images is not None:
        shape = tuple(pred["masks"].shape[-2:])
        size = (images[image_id]["height"], images[image_id]["width"])
        if shape != size:
            raise DetcoreError(
                f"coco metric: masks of image {image_id} are {shape[1]}x{shape[0]} "
                f"but the image is {size[1]}x{size[0]}; masks must be in original image pixels"
            )


# The area range of each of the 12 summary numbers (COCOeval's areaRngLbl).
_STAT_AREAS = ("all", "all", "all", "small", "medium", "large", "all", "all", "all", "small", "medium", "large")


def _stats_without_detections(coco, img_ids: list, cat_ids: list, iou_type: str) -> list[float]:
    """What COCOeval gives when nothing was detected (pycocotools cannot
    load an empty result list): 0, or -1 where no ground truth (crowd and
    ignored regions aside) falls in the number's area range."""
    from pycocotools.cocoeval import Params

    params = Params(iouType=iou_type)
    ranges = dict(zip(params.areaRngLbl, params.areaRng))
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_ids, catIds=cat_ids))
            if not a.get("iscrowd", 0) and not a.get("ignore", 0)]

    def has_gt(area: str) -> bool:
        lo, hi = ranges[area]
        return any(lo <= a["area"] <= hi for a in anns)

    found = {area: has_gt(area) for area in set(_STAT_AREAS)}
    return [0.0 if found[area] else -1.0 for area in _STAT_AREAS]


def _find(dataset, name: str):
    value = getattr(dataset, name, None)
    if value is None:
        raise DetcoreError(
            f"the coco metric needs a dataset with a '{name}' attribute (a 'coco' dataset, or a "
            f"repeat/class_balanced wrapper of one); got {type(dataset).__name__}"
        )
    return value


class CocoMetric:
    """``evaluate(predictions, dataset)`` -> ``{"bbox_mAP": ..., "bbox_mAP_50": ..., ...}``.

    The ground truth is ``dataset.coco`` restricted to the dataset's images
    (``dataset.img_ids``) and categories (``dataset.cat_ids``); COCOeval
    handles crowd regions and area ranges itself.
    """

    def __init__(
        self,
        iou_types=("bbox",),
        classwise: bool = False,
        outfile_prefix: str | None = None,
        backend: str = "auto",
    ):
        self.iou_types = list(iou_types)
        self.classwise = classwise
        self.outfile_prefix = outfile_prefix
        self.backend = resolve_backend(backend)
        self._fast_gt: tuple[Any, Any] | None = None
        # What save_plots draws from: the last evaluate()'s inputs and PR arrays.
        self._last: dict[str, Any] | None = None

    def _gt(self, coco):
        if self.backend == "pycocotools":
            return coco
        # faster-coco-eval keeps its own index; build it once per GT object.
        if self._fast_gt is None or self._fast_gt[0] is not coco:
            from faster_coco_eval import COCO as FastCOCO

            self._fast_gt = (coco, FastCOCO(coco.dataset))
        return self._fast_gt[1]

    def _evaluator(self, gt, dt, iou_type):
        if self.backend == "pycocotools":
            from pycocotools.cocoeval import COCOeval

            return COCOeval(gt, dt, iou_type)
        from faster_coco_eval import COCOeval_faster

        return COCOeval_faster(gt, dt, iou_type, print_function=logger.debug)

    def evaluate(self, predictions: list[dict], dataset) -> dict[str, float]:
        coco = _find(dataset, "coco")
        cat_ids = list(_find(dataset, "cat_ids"))
        class_names = list(getattr(dataset, "class_names", [str(c) for c in cat_ids]))
        img_ids = list(getattr(dataset, "img_ids", None) or sorted({int(p["image_id"]) for p in predictions}))
        metrics: dict[str, float] = {}
        self._last = {"predictions": predictions, "dataset": dataset, "img_ids": img_ids, "pr": {}}
        for iou_type in self.iou_types:
            results = to_coco_results(predictions, cat_ids, iou_type, coco.imgs)
            if self.outfile_prefix:
                logger.info("coco metric: wrote %s", _write_json(f"{self.outfile_prefix}.{iou_type}.json", results))
            if not results:
                logger.warning("coco metric: no %s predictions at all; every %s number is 0 (-1 where "
                               "no ground truth is in the area range, as pycocotools)", iou_type, iou_type)
                metrics.update(zip(stat_keys(iou_type), _stats_without_detections(coco, img_ids, cat_ids, iou_type)))
                continue
            gt = self._gt(coco)
            with contextlib.redirect_stdout(io.StringIO()) as out:
                dt = gt.loadRes(results)
                ev = self._evaluator(gt, dt, iou_type)
                ev.params.imgIds = img_ids
                ev.params.catIds = cat_ids
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            summary = out.getvalue()
            logger.info("coco %s evaluation (%s):\n%s", iou_type, self.backend, summary.strip())
            metrics.update({k: float(v) for k, v in zip(stat_keys(iou_type), ev.stats[:12])})
            # precision: [IoU thresholds, recall points, classes, areas, maxDets]
            self._last["pr"][iou_type] = (np.asarray(ev.params.recThrs), np.asarray(ev.eval["precision"]))
            if self.classwise:
                metrics.update(self._per_class(ev, iou_type, class_names))
        return metrics

    def summary(self, results: dict[str, float]) -> str:
        """pycocotools' 12-line summary for each IoU type, as
        ``COCOeval.summarize()`` prints it, then the per-class APs."""
        blocks, shown = [], set()
        for iou_type in self.iou_types:
            keys = stat_keys(iou_type)
            if not all(k in results for k in keys):
                continue
            lines = [f"{iou_type}:"]
            for key, (what, iou, area, dets) in zip(keys, _SUMMARY_LINES):
                short = "(AP)" if what.endswith("Precision") else "(AR)"
                lines.append(
                    f" {what:<18} {short} @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = {results[key]:.3f}"
                )
            blocks.append("\n".join(lines))
            shown.update(keys)
        rest = {k: v for k, v in results.items() if k not in shown}
        if rest:
            width = max(len(k) for k in rest)
            blocks.append("\n".join(f"  {k:<{width}}  {v:.4f}" for k, v in rest.items()))
        return "\n".join(blocks)

    def dump(self, predictions: list[dict], dataset, path: str | os.PathLike) -> list[str]:
        """Write ``predictions`` in COCO results format (what ``COCO.loadRes``
        reads: ``bbox`` as ``[x, y, w, h]`` in original pixels,
        ``category_id`` from ``dataset.cat_ids``) to ``path``; masks, when
        predicted, go to ``<path stem>.segm.json`` as RLE."""
        coco = _find(dataset, "coco")
        cat_ids = list(_find(dataset, "cat_ids"))
        path = os.fspath(path)
        written = [_write_json(path, to_coco_results(predictions, cat_ids, "bbox", coco.imgs))]
        if any("masks" in p for p in predictions):
            stem = path[: -len(".json")] if path.endswith(".json") else path
            written.append(_write_json(stem + ".segm.json", to_coco_results(predictions, cat_ids, "segm", coco.imgs)))
        return written

    def save_plots(self, out_dir: str | os.PathLike) -> list[Path]:
        """Draw the last :meth:`evaluate`'s figures into ``out_dir``:
        ``<iou_type>_PR_curve.png`` (precision-recall per class at IoU 0.5,
        all areas, 100 detections: COCOeval's own ``precision`` array) for
        each IoU type evaluated, and ``confusion_matrix.png`` (boxes matched
        at IoU 0.5, detections scoring at least 0.25; crowd regions left
        out). Returns the files written (none before the first evaluation)."""
        from detcore import confusion_matrix, save_confusion_matrix, save_pr_curves

        if self._last is None:
            return []
        dataset = self._last["dataset"]
        coco, cat_ids = _find(dataset, "coco"), list(_find(dataset, "cat_ids"))
        names = list(getattr(dataset, "class_names", [str(c) for c in cat_ids]))
        out_dir = Path(out_dir)
        written = []
        for iou_type, (recall, precision) in self._last["pr"].items():
            written.append(save_pr_curves(
                recall, precision[0, :, :, 0, -1], names, out_dir / f"{iou_type}_PR_curve.png",
                title=f"Precision-recall ({iou_type}, IoU 0.5)",
            ))
        index = {c: i for i, c in enumerate(cat_ids)}
        by_image = {int(p["image_id"]): p for p in self._last["predictions"]}
        empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)}
        preds, gts = [], []
        for img_id in self._last["img_ids"]:
            anns = [a for a in coco.imgToAnns.get(img_id, []) if a["category_id"] in index and not a.get("iscrowd")]
            xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            gts.append({"boxes": np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                        "labels": np.array([index[a["category_id"]] for a in anns], dtype=np.int64)})
            preds.append(by_image.get(img_id, empty))
        matrix = confusion_matrix(preds, gts, len(cat_ids), iou_thr=0.5, score_thr=0.25)
        written.append(save_confusion_matrix(
            matrix, names, out_dir / "confusion_matrix.png",
            title="Confusion matrix (boxes, IoU 0.5, score >= 0.25)",
        ))
        return written

    @staticmethod
    def _per_class(ev, iou_type: str, class_names: list[str]) -> dict[str, float]:
        # precision: [iou thresholds, recall points, classes, area ranges, max dets]
        precision = ev.eval["precision"]
        out = {}
        for k, name in enumerate(class_names):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            out[f"{iou_type}_AP_{name}"] = float(np.mean(p)) if p.size else float("nan")
        lines = "\n".join(f"  {name:<24s} {out[f'{iou_type}_AP_{name}']:.3f}" for name in class_names)
        logger.info("coco %s AP per class:\n%s", iou_type, lines)
        return out
