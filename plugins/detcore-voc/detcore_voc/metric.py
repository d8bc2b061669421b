"""Pascal VOC mAP: per-class average precision at one IoU threshold, with the
area under the interpolated precision/recall curve (VOC2010+) and the
11-point interpolation (VOC2007), as the VOC devkit computes them.

Ground truth marked ``difficult`` neither counts as a positive nor makes a
matching detection a false positive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_precision(recall: np.ndarray, precision: np.ndarray, mode: str = "area") -> float:
    """AP from a precision/recall curve (detections sorted by score).

    ``area``: area under the curve after making precision monotonically
    decreasing (VOC2010+). ``11points``: mean of the highest precision at
    recall >= 0, 0.1, ..., 1 (VOC2007)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if mode == "11points":
        points = []
        for t in np.linspace(0.0, 1.0, 11):
            above = precision[recall >= t - 1e-12]
            points.append(above.max() if above.size else 0.0)
        return float(np.mean(points))
    if mode != "area":
        raise ValueError(f"mode must be 'area' or '11points', got {mode!r}")
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def box_iou(box: np.ndarray, boxes: np.ndarray, legacy: bool = False) -> np.ndarray:
    """IoU of one xyxy box with many; ``legacy`` adds the devkit's +1 pixel to
    widths and heights (VOC's inclusive integer coordinates)."""
    one = 1.0 if legacy else 0.0
    iw = np.maximum(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]) + one, 0.0)
    ih = np.maximum(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]) + one, 0.0)
    inter = iw * ih
    area = (box[2] - box[0] + one) * (box[3] - box[1] + one)
    areas = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    return inter / np.maximum(area + areas - inter, np.finfo(np.float64).eps)


def class_pr(
    detections: Sequence[tuple[object, float, Sequence[float]]],
    ground_truth: dict[object, tuple[np.ndarray, np.ndarray]],
    iou_thr: float = 0.5,
    legacy: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall and precision after each detection of one class, and the number
    of positives.

    ``detections``: ``(image, score, box)``; ``ground_truth``: image ->
    (boxes ``[K, 4]``, difficult ``[K]`` bool). Detections are matched in
    order of decreasing score to the ground-truth box of highest IoU in their
    image; a match at ``iou > iou_thr`` is a true positive unless that box was
    matched before (false positive) or is difficult (ignored)."""
    npos = int(sum((~d).sum() for _, d in ground_truth.values()))
    order = sorted(range(len(detections)), key=lambda i: -detections[i][1])
    used = {img: np.zeros(len(b), dtype=bool) for img, (b, _) in ground_truth.items()}
    tp, fp = [], []
    for i in order:
        img, _, box = detections[i]
        boxes, difficult = ground_truth.get(img, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        if len(boxes):
            ious = box_iou(np.asarray(box, dtype=np.float64), boxes, legacy)
            j = int(ious.argmax())
            if ious[j] > iou_thr:
                if difficult[j]:
                    continue
                if not used[img][j]:
                    used[img][j] = True
                    tp.append(1.0)
                    fp.append(0.0)
                    continue
        tp.append(0.0)
        fp.append(1.0)
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    recall = tp_c / max(npos, 1)
    precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
    return recall, precision, npos


def voc_map(
    detections: dict[int, list[tuple[object, float, Sequence[float]]]],
    ground_truth: dict[int, dict[object, tuple[np.ndarray, np.ndarray]]],
    num_classes: int,
    iou_thr: float = 0.5,
    legacy: bool = False,
) -> tuple[dict[int, float], dict[int, float]]:
    """Per-class AP (area, 11-point) for the classes that have positives."""
    area, eleven = {}, {}
    for c in range(num_classes):
        gt = ground_truth.get(c, {})
        recall, precision, npos = class_pr(detections.get(c, []), gt, iou_thr, legacy)
        if npos == 0:
            continue  # no positives: AP is undefined, the class is left out of the mean
        area[c] = average_precision(recall, precision, "area")
        eleven[c] = average_precision(recall, precision, "11points")
    return area, eleven


class VocMetric:
    """The ``voc`` metric: ``evaluate(predictions, dataset)`` returns
    ``voc_mAP`` (area), ``voc_mAP_11pt`` and ``voc_AP/<class>`` (area)."""

    def __init__(self, iou_thr: float = 0.5, legacy_coordinates: bool = False, classwise: bool = True):
        self.iou_thr = iou_thr
        self.legacy = legacy_coordinates
        self.classwise = classwise
        self._last: dict | None = None  # what save_plots draws: the last evaluate()'s inputs

    def evaluate(self, predictions: list[dict], dataset) -> dict[str, float]:
        class_names = list(dataset.class_names)
        gts = ground_truth_of(dataset)
        ground_truth: dict[int, dict] = {c: {} for c in range(len(class_names))}
        for image_id, (boxes, labels, difficult) in gts.items():
            for c in range(len(class_names)):
                keep = labels == c
                ground_truth[c][image_id] = (boxes[keep], difficult[keep])
        detections: dict[int, list] = {c: [] for c in range(len(class_names))}
        for pred in predictions:
            image_id = int(pred["image_id"])
            boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
            scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
            labels = np.asarray(pred["labels"], dtype=np.int64).reshape(-1)
            for box, score, label in zip(boxes, scores, labels):
                if 0 <= label < len(class_names):
                    detections[int(label)].append((image_id, float(score), box))
        self._last = {"class_names": class_names, "gts": gts, "predictions": predictions,
                      "detections": detections, "ground_truth": ground_truth}
        area, eleven = voc_map(detections, ground_truth, len(class_names), self.iou_thr, self.legacy)
        out = {
            "voc_mAP": float(np.mean(list(area.values()))) if area else 0.0,
            "voc_mAP_11pt": float(np.mean(list(eleven.values()))) if eleven else 0.0,
        }
        if self.classwise:
            for c, ap in area.items():
                out[f"voc_AP/{class_names[c]}"] = ap
        return out

    def save_plots(self, out_dir) -> list:
        """Draw the last :meth:`evaluate`'s figures into ``out_dir``:
        ``voc_PR_curve.png`` (each class's precision, made monotone as for
        the area AP, at 101 recall points; the legend's AP is their mean, so
        close to but not the area AP) and ``confusion_matrix.png`` (boxes
        matched at IoU 0.5, detections scoring at least 0.25, difficult
        objects left out). Returns the files written."""
        from pathlib import Path

        from detcore import confusion_matrix, save_confusion_matrix, save_pr_curves

        if self._last is None:
            return []
        last, out_dir = self._last, Path(out_dir)
        names = last["class_names"]
        points = np.linspace(0.0, 1.0, 101)
        curves = np.full((len(points), len(names)), -1.0)
        for c in range(len(names)):
            recall, precision, npos = class_pr(last["detections"].get(c, []), last["ground_truth"].get(c, {}),
                                               self.iou_thr, self.legacy)
            if npos == 0:
                continue
            best = np.maximum.accumulate(np.concatenate([precision, [0.0]])[::-1])[::-1]  # max precision at >= each recall
            idx = np.searchsorted(np.concatenate([recall, [np.inf]]), points, side="left")
            curves[:, c] = best[np.minimum(idx, len(best) - 1)]
        written = [save_pr_curves(points, curves, names, out_dir / "voc_PR_curve.png",
                                  title=f"Precision-recall (VOC, IoU {self.iou_thr:g})")]
        preds, gts = [], []
        for pred in last["predictions"]:
            boxes, labels, difficult = last["gts"].get(int(pred["image_id"]), (np.zeros((0, 4)), np.zeros(0), np.zeros(0)))
            keep = ~np.asarray(difficult, dtype=bool)
            gts.append({"boxes": np.asarray(boxes)[keep], "labels": np.asarray(labels)[keep]})
            preds.append(pred)
        matrix = confusion_matrix(preds, gts, len(names), iou_thr=0.5, score_thr=0.25)
        written.append(save_confusion_matrix(matrix, names, out_dir / "confusion_matrix.png",
                                             title="Confusion matrix (boxes, IoU 0.5, score >= 0.25)"))
        return written

    def summary(self, results: dict[str, float]) -> str:
        """The per-class AP table (area under the interpolated PR curve)
        with the mean in both interpolations, as ``detcore test`` prints it."""
        prefix = "voc_AP/"
        per_class = {k[len(prefix):]: v for k, v in results.items() if k.startswith(prefix)}
        width = max([len("mAP 11pt"), *map(len, per_class)])
        lines = [f"VOC AP @ IoU={self.iou_thr:.2f}", f"  {'class':<{width}}  AP"]
        lines += [f"  {name:<{width}}  {ap:.3f}" for name, ap in per_class.items()]
        lines.append(f"  {'mAP':<{width}}  {results.get('voc_mAP', 0.0):.3f}")
        lines.append(f"  {'mAP 11pt':<{width}}  {results.get('voc_mAP_11pt', 0.0):.3f}")
        return "\n".join(lines)


def ground_truth_of(dataset) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """image_id -> (boxes in original pixels, labels, difficult) of a dataset.

    A :class:`detcore_voc.dataset.VocDataset` answers from its XML records
    (difficult objects included). Any other dataset is read item by item:
    boxes are scaled back to ``orig_size`` if transforms resized the image,
    and ``iscrowd`` boxes count as difficult (ignored)."""
    if hasattr(dataset, "voc_ground_truth"):
        return dataset.voc_ground_truth()
    out = {}
    for i in range(len(dataset)):
        _, target = dataset[i]
        boxes = np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)
        canvas = getattr(target["boxes"], "canvas_size", None)
        orig = target.get("orig_size")
        if canvas is not None and orig is not None and tuple(canvas) != tuple(orig):
            sy, sx = orig[0] / canvas[0], orig[1] / canvas[1]
            boxes = boxes * np.array([sx, sy, sx, sy])
        labels = np.asarray(target["labels"], dtype=np.int64).reshape(-1)
        crowd = target.get("iscrowd")
        difficult = (
            np.asarray(crowd).astype(bool).reshape(-1) if crowd is not None else np.zeros(len(labels), bool)
        )
        out[int(target["image_id"])] = (boxes, labels, difficult)
    return out
