"""A very small detector following detcore's model interface, used by the
hook tests only until the built-in fcos (tiny backbone) is available."""

from __future__ import annotations

from detcore import hookimpl


def probe_detector(num_classes: int = 2, topk: int = 5):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ProbeDetector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
            )
            self.head = nn.Conv2d(16, num_classes + 4, 1)

        def forward(self, images, targets=None):
            x = torch.stack(images)
            h, w = x.shape[-2:]
            out = self.head(self.backbone(x))
            logits, reg = out[:, :num_classes], out[:, num_classes:].sigmoid()
            scale = torch.tensor([w, h, w, h], dtype=reg.dtype, device=reg.device)
            if self.training:
                present = torch.zeros(len(images), num_classes, device=x.device)
                box = torch.zeros(len(images), 4, device=x.device)
                for i, t in enumerate(targets):
                    present[i, t["labels"]] = 1
                    if len(t["boxes"]):
                        box[i] = t["boxes"][0] / scale
                cls = F.binary_cross_entropy_with_logits(logits.amax((-2, -1)), present)
                reg_loss = F.l1_loss(reg.mean((-2, -1)), box)
                return {"loss_cls": cls, "loss_box": reg_loss}
            results = []
            for lg, rg in zip(logits, reg):
                scores, labels = lg.sigmoid().flatten(1).max(0)
                boxes = rg.flatten(1).T * scale
                boxes = torch.stack([boxes[:, 0].minimum(boxes[:, 2]), boxes[:, 1].minimum(boxes[:, 3]),
                                     boxes[:, 0].maximum(boxes[:, 2]), boxes[:, 1].maximum(boxes[:, 3])], 1)
                s, idx = scores.topk(min(topk, len(scores)))
                results.append({"boxes": boxes[idx], "scores": s, "labels": labels[idx]})
            return results

    return ProbeDetector()


@hookimpl
def detcore_detectors():
    return {"probe_detector": probe_detector}
