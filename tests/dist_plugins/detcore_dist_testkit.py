"""Test-only plugin for the distributed training tests: a metric that can be
slow and summarises the gathered predictions, a runner hook that saves every
rank's parameters, and one that makes a chosen rank fail.

Loaded with ``plugins = ["detcore_dist_testkit"]`` in a run file and this
folder on PYTHONPATH. Light at import (no torch).
"""

from __future__ import annotations

import time

from detcore import hookimpl


def dist_tiny_det(num_classes: int = 3, width: int = 8):
    """A small real detector whose loss and outputs decompose per image, so
    that DDP on 2 x B images equals one process on 2B images: GroupNorm (no
    batch statistics), each image's loss normalised by its own positives,
    the batch loss the mean over images; eval outputs every location (no
    NMS or top-k), continuous in the weights."""
    import torch
    from torch import nn
    from torchvision.ops import sigmoid_focal_loss

    class DistTinyDetector(nn.Module):
        stride = 4

        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(
                nn.Conv2d(3, width, 3, stride=2, padding=1),
                nn.GroupNorm(2, width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1),
                nn.GroupNorm(2, width),
                nn.ReLU(),
            )
            self.cls = nn.Conv2d(width, num_classes, 3, padding=1)
            self.reg = nn.Conv2d(width, 4, 3, padding=1)

        def forward(self, images, targets=None):
            feats = self.backbone(torch.stack(list(images)))
            cls = self.cls(feats).flatten(2).transpose(1, 2)  # [N, L, C]
            reg = (
                nn.functional.softplus(self.reg(feats)).flatten(2).transpose(1, 2) * self.stride * 2
            )
            fh, fw = feats.shape[-2:]
            ys, xs = torch.meshgrid(
                (torch.arange(fh) + 0.5) * self.stride,
                (torch.arange(fw) + 0.5) * self.stride,
                indexing="ij",
            )
            centers = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)
            ltrb_to_box = torch.cat([centers, centers], 1) + reg * torch.tensor(
                [-1.0, -1.0, 1.0, 1.0]
            )
            if not self.training:
                scores, labels = cls.sigmoid().max(-1)
                return [
                    {"boxes": b, "scores": s, "labels": lb}
                    for b, s, lb in zip(ltrb_to_box, scores, labels)
                ]
            cls_losses, box_losses = [], []
            for k, t in enumerate(targets):
                boxes = t["boxes"].float()
                inside = (
                    (centers[:, None, 0] > boxes[None, :, 0])
                    & (centers[:, None, 0] < boxes[None, :, 2])
                    & (centers[:, None, 1] > boxes[None, :, 1])
                    & (centers[:, None, 1] < boxes[None, :, 3])
                )  # [L, K]
                area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand_as(
                    inside
                )
                area = torch.where(inside, area, torch.full_like(area, float("inf")))
                best_area, best = (
                    area.min(1) if len(boxes) else (torch.full((len(centers),), float("inf")), None)
                )
                pos = torch.isfinite(best_area)
                target = torch.zeros_like(cls[k])
                if pos.any():
                    target[pos, t["labels"][best[pos]]] = 1.0
                npos = max(int(pos.sum()), 1)
                cls_losses.append(sigmoid_focal_loss(cls[k], target, reduction="sum") / npos)
                if pos.any():
                    box_losses.append(
                        nn.functional.l1_loss(
                            ltrb_to_box[k][pos], boxes[best[pos]], reduction="sum"
                        )
                        / npos
                        / 32
                    )
                else:
                    box_losses.append(reg[k].sum() * 0.0)
            return {
                "loss_cls": torch.stack(cls_losses).mean(),
                "loss_box": torch.stack(box_losses).mean(),
            }

    return DistTinyDetector()


class PredictionSummary:
    """``evaluate`` returns counts and sums over the predictions, which are
    equal for two evaluations of the same model on the same images whatever
    the order they arrive in; ``sleep_s`` makes it slow."""

    def __init__(self, sleep_s: float = 0.0, sleep_calls: int = 1):
        self.sleep_s = sleep_s
        self.sleep_calls = sleep_calls
        self.calls = 0

    def evaluate(self, predictions, dataset) -> dict[str, float]:
        import torch

        self.calls += 1
        if self.calls <= self.sleep_calls:
            time.sleep(self.sleep_s)
        ids = [int(p["image_id"]) for p in predictions]
        boxes = [p["boxes"].double() for p in sorted(predictions, key=lambda p: int(p["image_id"]))]
        scores = [
            p["scores"].double() for p in sorted(predictions, key=lambda p: int(p["image_id"]))
        ]
        return {
            "n_predictions": float(len(ids)),
            "n_images": float(len(set(ids))),
            "dataset_len": float(len(dataset)),
            "n_dets": float(sum(len(s) for s in scores)),
            "score_sum": float(sum(s.sum() for s in scores)) if scores else 0.0,
            "box_sum": float(sum(b.sum() for b in boxes)) if boxes else 0.0,
            "top_score": float(max((s.max() for s in scores if len(s)), default=torch.tensor(0.0))),
        }

    def summary(self, results: dict[str, float]) -> str:
        """One line, logged after each validation by the main process only."""
        return (f"prediction summary: {int(results['n_predictions'])} predictions for "
                f"{int(results['n_images'])} of {int(results['dataset_len'])} images")


class SaveParams:
    """Saves ``runner.model``'s state dict on every rank after the run to
    ``work_dir/params_rank<R>.pt`` (a test needs every rank's copy)."""

    def __init__(self, name: str = "params"):
        self.name = name

    @hookimpl
    def detcore_after_run(self, runner):
        import torch

        state = {k: v.detach().cpu().clone() for k, v in runner.model.state_dict().items()}
        torch.save(state, runner.work_dir / f"{self.name}_rank{runner.rank}.pt")


class FailOnRank:
    """Raises on rank ``rank`` before training iteration ``at_iter``."""

    def __init__(self, rank: int = 1, at_iter: int = 1):
        self.rank = rank
        self.at_iter = at_iter

    @hookimpl
    def detcore_before_train_iter(self, runner, iteration, batch):
        if runner.rank == self.rank and iteration == self.at_iter:
            raise RuntimeError(f"injected failure on rank {runner.rank} at iteration {iteration}")


class FailInValidation:
    """Raises on rank ``rank`` in the validation after training iteration
    ``at_iter`` (after its first validation batch)."""

    def __init__(self, rank: int = 1, at_iter: int = 4):
        self.rank = rank
        self.at_iter = at_iter

    @hookimpl
    def detcore_after_val_iter(self, runner, batch, outputs):
        if runner.rank == self.rank and runner.iter == self.at_iter:
            raise RuntimeError(f"injected failure on rank {runner.rank} in validation at iteration {runner.iter}")


class HangInValidation:
    """Rank ``rank`` stops making progress (sleeps) in the validation after
    training iteration ``at_iter``, as a rank stuck in I/O or a deadlock would."""

    def __init__(self, rank: int = 1, at_iter: int = 4, sleep_s: float = 3600.0):
        self.rank = rank
        self.at_iter = at_iter
        self.sleep_s = sleep_s

    @hookimpl
    def detcore_after_val_iter(self, runner, batch, outputs):
        if runner.rank == self.rank and runner.iter == self.at_iter:
            time.sleep(self.sleep_s)


@hookimpl
def detcore_detectors():
    return {"dist_tiny_det": dist_tiny_det}


@hookimpl
def detcore_metrics():
    return {"prediction_summary": PredictionSummary}


@hookimpl
def detcore_runner_hooks():
    return {
        "save_params": SaveParams,
        "fail_on_rank": FailOnRank,
        "fail_in_validation": FailInValidation,
        "hang_in_validation": HangInValidation,
    }
