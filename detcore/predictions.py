"""What a detector found in one image, and its JSON forms.

:class:`Prediction` is what :meth:`detcore.Detector.predict` returns per
image. Its :meth:`~Prediction.to_dict` is exactly an image entry of ``detcore
predict``'s ``predictions.json``; :meth:`~Prediction.to_coco` gives COCO
results records through :func:`coco_results`, the one COCO results writer
(the ``coco`` metric's ``detcore test --out`` dump uses it too).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

__all__ = ["Prediction", "coco_results", "detections_json", "mask_rle"]


def _numpy(x):
    """A tensor (any device) or array as a numpy array; half precision
    becomes float32 (numpy has no bfloat16), float64 stays float64."""
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() and x.element_size() < 4 else x).numpy()
    return np.asarray(x)


def _binary(masks):
    """Masks ``[N, 1, H, W]`` or ``[N, H, W]`` (probabilities, or 0/1 / bool)
    as uint8 0/1 ``[N, H, W]``: probabilities are cut at 0.5."""
    import numpy as np

    m = _numpy(masks)
    m = m[:, 0] if m.ndim == 4 else m
    return (m > 0.5 if np.issubdtype(m.dtype, np.floating) else m != 0).astype(np.uint8)


def _rles(masks) -> list[dict]:
    """COCO RLEs (``counts`` as text) of masks ``[N, (1,) H, W]``."""
    import numpy as np
    from pycocotools import mask as mask_utils

    rles = mask_utils.encode(np.asfortranarray(_binary(masks).transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def mask_rle(mask) -> dict | None:
    """One mask (``[1, H, W]`` or ``[H, W]``, probabilities or 0/1) as COCO
    RLE with ``counts`` as text; ``None`` without pycocotools."""
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        return None
    (rle,) = _rles(mask.reshape(1, *mask.shape[-2:]))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"]}


def detections_json(det: dict, class_names: Sequence[str]) -> list[dict]:
    """``[{"box", "score", "label", "class"(, "mask_rle")}, ...]`` for the
    detections of one image (boxes xyxy, rounded to 0.01 px; scores to 1e-4)."""
    out = []
    for i in range(len(det["boxes"])):
        label = int(det["labels"][i])
        item = {
            "box": [round(float(v), 2) for v in det["boxes"][i]],
            "score": round(float(det["scores"][i]), 4),
            "label": label,
            "class": class_names[label] if 0 <= label < len(class_names) else str(label),
        }
        if det.get("masks") is not None:
            rle = mask_rle(det["masks"][i])
            if rle is not None:
                item["mask_rle"] = rle
        out.append(item)
    return out


def coco_results(predictions: Sequence[dict], cat_ids: Sequence[int] | None = None, iou_type: str = "bbox") -> list[dict]:
    """Records in COCO results format (what ``COCO.loadRes`` reads) for
    per-image predictions ``{"image_id", "boxes", "scores", "labels"(,
    "masks")}`` (tensors or arrays; boxes xyxy in original pixels, 0-based
    labels): ``bbox`` as ``[x, y, w, h]`` for ``iou_type="bbox"``, a
    ``segmentation`` RLE per detection for ``"segm"`` (predictions without
    masks give none). ``category_id`` is ``cat_ids[label]``, or the 0-based
    label when ``cat_ids`` is ``None``. Scores and boxes keep float64
    precision. Checking the predictions against a dataset is the metric's
    job (the ``coco`` metric of detcore-coco names what does not fit)."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
    out: list[dict] = []
    for pred in predictions:
        image_id = int(pred["image_id"])
        scores = _numpy(pred["scores"]).astype("float64").reshape(-1).tolist()
        if not scores:
            continue
        labels = _numpy(pred["labels"]).astype("int64").reshape(-1).tolist()
        cats = [int(cat_ids[lab]) if cat_ids is not None else int(lab) for lab in labels]
        if iou_type == "bbox":
            boxes = _numpy(pred["boxes"]).astype("float64").reshape(-1, 4).tolist()
            for (x1, y1, x2, y2), s, c in zip(boxes, scores, cats):
                out.append({"image_id": image_id, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
        elif pred.get("masks") is not None:
            for rle, s, c in zip(_rles(pred["masks"]), scores, cats):
                out.append({"image_id": image_id, "category_id": c, "segmentation": rle, "score": s})
    return out


@attrs.frozen(eq=False)
class Prediction:
    """The detections of one image, in the image's original pixels.

    ``boxes``: float ``[K, 4]`` (x1, y1, x2, y2); ``scores``: ``[K]``;
    ``labels``: int64 ``[K]``, 0-based indices into ``class_names`` (every
    class the model knows); ``masks``: uint8 ``[K, 1, H, W]`` (0/1) for
    instance-segmentation models, else ``None``. ``image`` is the input as
    uint8 ``[3, H, W]`` (what :meth:`draw` draws on), ``path`` the file it
    came from (``None`` for arrays and tensors). ``cat_ids`` maps labels to
    the dataset's category ids (COCO JSON), when the checkpoint records them.
    All tensors are on the CPU.
    """

    boxes: Any
    scores: Any
    labels: Any
    class_names: tuple[str, ...] = attrs.field(converter=tuple)
    image: Any = attrs.field(repr=False)
    masks: Any = attrs.field(default=None, repr=False)
    path: str | None = None
    cat_ids: tuple[int, ...] | None = attrs.field(
        default=None, converter=lambda v: None if v is None else tuple(int(i) for i in v), repr=False
    )

    def __repr__(self) -> str:
        shown = ", ".join(f"{n} {s:.2f}" for n, s in zip(self.names[:5], self.scores.tolist()))
        more = f", ... ({len(self)} in all)" if len(self) > 5 else ""
        where = f", path={self.path!r}" if self.path is not None else ""
        return f"Prediction({self.width}x{self.height}: [{shown}{more}]{where})"

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def height(self) -> int:
        return int(self.image.shape[-2])

    @property
    def width(self) -> int:
        return int(self.image.shape[-1])

    @property
    def names(self) -> list[str]:
        """The class name of each detection (``class_names[label]``)."""
        n = len(self.class_names)
        return [self.class_names[i] if 0 <= i < n else str(i) for i in self.labels.tolist()]

    def _det(self) -> dict:
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels, "masks": self.masks}

    def to_dict(self) -> dict:
        """``{"file"?, "height", "width", "detections": [{"box", "score",
        "label", "class"(, "mask_rle")}]}``: an image entry of ``detcore
        predict``'s ``predictions.json`` (``file`` only for a file input)."""
        out: dict = {"file": self.path} if self.path is not None else {}
        out.update(height=self.height, width=self.width, detections=detections_json(self._det(), self.class_names))
        return out

    def to_coco(self, image_id: int = 0, *, cat_ids: Sequence[int] | None = None) -> list[dict]:
        """COCO results records (``bbox`` as x, y, w, h; with a
        ``segmentation`` RLE for mask models) for ``image_id``.
        ``category_id`` is ``cat_ids[label]`` (default: the checkpoint's
        category ids, else the 0-based label)."""
        ids = cat_ids if cat_ids is not None else self.cat_ids
        det = [{"image_id": image_id, **self._det()}]
        bbox = coco_results(det, ids, "bbox")
        for b, s in zip(bbox, coco_results(det, ids, "segm") if self.masks is not None else ()):
            b["segmentation"] = s["segmentation"]
        return bbox

    def draw(self):
        """The image with the boxes, ``"class score"`` labels and masks
        drawn (uint8 ``[3, H, W]``, :func:`detcore.visualize.draw_detections`)."""
        from detcore.visualize import draw_detections

        return draw_detections(
            self.image, self.boxes, self.labels, self.scores, list(self.class_names), masks=self.masks
        )

    def save(self, path: str | Path) -> Path:
        """Write :meth:`draw`'s picture to ``path`` (PNG for ``.png``, else JPEG)."""
        from detcore.visualize import save_image

        return save_image(self.draw(), path)
