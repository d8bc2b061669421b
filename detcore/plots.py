"""Result figures with matplotlib (the optional ``detcore[plot]`` extra):
precision-recall curves per class and a confusion matrix, the pictures a
detection run is judged by, and the import of matplotlib itself (with the
install hint) for every figure detcore draws (``detcore plot`` too).

Metrics draw their figures with these functions from their optional
``save_plots(out_dir)`` method (see :func:`detcore.hookspecs.detcore_metrics`);
the runner calls it at the end of a run with ``<work_dir>/plots``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from detcore.errors import DetcoreError

INSTALL_HINT = "pip install 'detcore[plot]'"


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (servers and CI need
    no display), or a :class:`DetcoreError` saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DetcoreError(
            f"drawing figures needs matplotlib, which is not installed. Install it with: {INSTALL_HINT}"
        ) from None
    return plt


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float() if x.is_floating_point() else x.detach().cpu()
        return x.numpy()
    return np.asarray(x)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair of xyxy boxes: ``[len(a), len(b)]``."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def confusion_matrix(
    predictions: Iterable[dict],
    ground_truths: Iterable[dict],
    num_classes: int,
    *,
    iou_thr: float = 0.5,
    score_thr: float = 0.25,
) -> np.ndarray:
    """Count detections by predicted and true class, as Ultralytics does.

    ``predictions`` and ``ground_truths`` are parallel (one dict per image):
    ``boxes`` (xyxy, the same pixels for both), ``labels`` (0-based) and, for
    predictions, ``scores`` (those under ``score_thr`` are left out). Each
    ground-truth box is matched to at most one detection of any class with
    IoU above ``iou_thr``, highest IoU first. Returns an int matrix
    ``[num_classes + 1, num_classes + 1]``: ``m[predicted, true]``, the last
    row and column being *background* (``m[-1, t]``: boxes of class ``t``
    missed; ``m[p, -1]``: detections of class ``p`` matching nothing).
    """
    m = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    bg = num_classes
    for pred, gt in zip(predictions, ground_truths):
        keep = _numpy(pred["scores"]).reshape(-1) >= score_thr
        dboxes = _numpy(pred["boxes"]).reshape(-1, 4)[keep]
        dlabels = _numpy(pred["labels"]).reshape(-1).astype(np.int64)[keep]
        gboxes = _numpy(gt["boxes"]).reshape(-1, 4)
        glabels = _numpy(gt["labels"]).reshape(-1).astype(np.int64)
        for labels in (dlabels, glabels):
            if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
                raise DetcoreError(
                    f"confusion_matrix: label {int(labels.max())} is outside the {num_classes} classes"
                )
        iou = box_iou(gboxes, dboxes)
        gi, di = np.nonzero(iou > iou_thr)
        order = np.argsort(-iou[gi, di], kind="stable")
        gi, di = gi[order], di[order]
        used_g, used_d = set(), set()
        for g, d in zip(gi.tolist(), di.tolist()):
            if g in used_g or d in used_d:
                continue
            used_g.add(g)
            used_d.add(d)
            m[dlabels[d], glabels[g]] += 1
        for g in range(len(glabels)):
            if g not in used_g:
                m[bg, glabels[g]] += 1
        for d in range(len(dlabels)):
            if d not in used_d:
                m[dlabels[d], bg] += 1
    return m


def _figure(width: float, height: float):
    pyplot()  # the install hint when matplotlib is missing
    from matplotlib.figure import Figure

    # A bare Figure (no pyplot state): safe to draw from any thread, never shown.
    return Figure(figsize=(width, height), dpi=100)


def save_pr_curves(
    recall: Sequence[float],
    precision,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "Precision-recall",
) -> Path:
    """Draw one precision-recall curve per class and their mean, and save.

    ``recall``: the ``R`` recall points; ``precision``: ``[R, K]`` for the
    ``K`` classes, ``-1`` (or NaN) where a class has no ground truth (such a
    class is left out, as COCOeval leaves it out of the mean). The legend
    gives each class's AP (the mean precision over the recall points).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64).reshape(len(recall), -1)
    if precision.shape[1] != len(class_names):
        raise ValueError(f"precision has {precision.shape[1]} classes, class_names {len(class_names)}")
    valid = [k for k in range(precision.shape[1]) if (precision[:, k] >= 0).all()]
    fig = _figure(7, 6)
    ax = fig.add_subplot()
    many = len(valid) > 20  # a legend of dozens of classes hides the plot
    for k in valid:
        ap = float(precision[:, k].mean())
        ax.plot(recall, precision[:, k], linewidth=1, color="grey" if many else None,
                label=None if many else f"{class_names[k]} {ap:.3f}")
    if valid:
        mean = precision[:, valid].mean(1)
        ax.plot(recall, mean, linewidth=3, color="blue", label=f"all classes {float(mean.mean()):.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if valid:  # no class with ground truth: an empty plot, no legend
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def save_confusion_matrix(
    matrix,
    class_names: Sequence[str],
    path: str | Path,
    *,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a :func:`confusion_matrix` (``[K + 1, K + 1]``, the last row and
    column *background*) as a heat map and save. ``normalize`` divides each
    column by its total: the share of each true class predicted as each
    class; counts are written in the cells when there are at most 30 classes."""
    m = np.asarray(matrix, dtype=np.float64)
    names = [*class_names, "background"]
    if m.shape != (len(names), len(names)):
        raise ValueError(f"matrix is {m.shape}, expected {(len(names), len(names))} for {len(class_names)} classes")
    shown = m / np.where(m.sum(0, keepdims=True) > 0, m.sum(0, keepdims=True), 1) if normalize else m
    n = len(names)
    side = max(5.0, min(20.0, 0.45 * n + 3))
    fig = _figure(side + 1, side)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class" if normalize else "count")
    ax.set_xticks(range(n), labels=names, rotation=90 if n > 8 else 0)
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("true class")
    ax.set_ylabel("predicted class")
    ax.set_title(title)
    if n <= 31:
        peak = shown.max() if shown.size else 0
        for (i, j), v in np.ndenumerate(shown):
            if m[i, j]:
                text = f"{v:.2f}" if normalize else str(int(v))
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if v > 0.5 * peak else "black")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")  # long class names stay inside the image
    return path
