"""The ``box_recall`` metric."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou


class BoxRecall:
    """``evaluate(predictions, dataset)`` as detcore's metric contract says:
    predictions are one dict per image with boxes in original pixels."""

    def __init__(self, iou_thr: float = 0.5, score_thr: float = 0.05):
        self.iou_thr = iou_thr
        self.score_thr = score_thr

    def evaluate(self, predictions: list[dict], dataset) -> dict[str, float]:
        by_id = {int(p["image_id"]): p for p in predictions}
        found = total = 0
        for i in range(len(dataset)):
            _, target = dataset[i]
            gt = torch.as_tensor(target["boxes"]).float().reshape(-1, 4)
            # Ground truth back to original pixels when transforms resized.
            h, w = target["boxes"].canvas_size
            oh, ow = target["orig_size"]
            gt = gt * torch.tensor([ow / w, oh / h, ow / w, oh / h])
            labels = torch.as_tensor(target["labels"])
            total += len(gt)
            pred = by_id.get(int(target["image_id"]))
            if pred is None or not len(gt):
                continue
            keep = pred["scores"] >= self.score_thr
            boxes, plabels = pred["boxes"][keep], pred["labels"][keep]
            if not len(boxes):
                continue
            iou = box_iou(gt, boxes.float())
            iou[labels[:, None] != plabels[None, :]] = 0
            found += int((iou.max(dim=1).values >= self.iou_thr).sum())
        return {"recall": found / total if total else 0.0}
