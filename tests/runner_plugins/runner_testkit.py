"""Test-only plugin for the runner tests (``-p runner_testkit`` with this
folder on ``sys.path``): a small real detector, runner hooks that record
events or keep state across checkpoints, and datasets that record what was
loaded. The scripted metric and the hooks that inject a NaN, send a signal
or stop training are the shipped plugin ``detcore.testing``, which the runner
tests' run files name next to this one."""

from __future__ import annotations

import json

from detcore import hookimpl

# ----------------------------------------------------------------------
# a small real detector (single-level FCOS-like, stride 4)
# ----------------------------------------------------------------------


def tiny_det(num_classes: int = 3, width: int = 8, score_thresh: float = 0.05, max_dets: int = 20):
    """A two-conv backbone and a per-location head: class logits (focal
    loss) and ltrb box distances (L1), decoded with NMS in eval mode."""
    import torch
    from torch import nn

    class TinyDetector(nn.Module):
        stride = 4

        def __init__(self):
            super().__init__()
            self.num_classes = num_classes
            self.backbone = nn.Sequential(
                nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
            )
            self.head = nn.ModuleDict(
                {
                    "tower": nn.Conv2d(width, width, 3, padding=1),
                    "cls_logits": nn.Conv2d(width, num_classes, 3, padding=1),
                    "bbox_reg": nn.Conv2d(width, 4, 3, padding=1),
                }
            )

        def _batch(self, images):
            s = self.stride
            h = max(i.shape[-2] for i in images)
            w = max(i.shape[-1] for i in images)
            h, w = -(-h // s) * s, -(-w // s) * s
            x = images[0].new_zeros((len(images), 3, h, w))
            for k, img in enumerate(images):
                x[k, :, : img.shape[-2], : img.shape[-1]] = img
            return x

        def forward(self, images, targets=None):
            feats = torch.relu(self.head["tower"](self.backbone(self._batch(images))))
            cls = self.head["cls_logits"](feats)  # [N, C, h, w]
            reg = torch.relu(self.head["bbox_reg"](feats)) * self.stride * 4  # ltrb in pixels
            n, _, fh, fw = cls.shape
            ys, xs = torch.meshgrid(
                (torch.arange(fh, device=cls.device) + 0.5) * self.stride,
                (torch.arange(fw, device=cls.device) + 0.5) * self.stride,
                indexing="ij",
            )
            centers = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)  # [L, 2]
            cls = cls.flatten(2).transpose(1, 2)  # [N, L, C]
            reg = reg.flatten(2).transpose(1, 2)  # [N, L, 4]
            if self.training:
                return self._losses(cls, reg, centers, targets)
            return self._detect(cls, reg, centers, images)

        def _losses(self, cls, reg, centers, targets):
            from torchvision.ops import sigmoid_focal_loss

            cls_t = torch.zeros_like(cls)
            box_losses, num_pos = [], 0
            for k, t in enumerate(targets):
                boxes = t["boxes"]
                if len(boxes) == 0:
                    continue
                cx, cy = centers[:, 0:1], centers[:, 1:2]
                ltrb = torch.stack([cx - boxes[:, 0], cy - boxes[:, 1], boxes[:, 2] - cx, boxes[:, 3] - cy], -1)
                inside = ltrb.min(-1).values > 0  # [L, K]
                area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand_as(inside)
                area = torch.where(inside, area, torch.full_like(area, float("inf")))
                best_area, best = area.min(1)
                pos = torch.isfinite(best_area)
                if pos.any():
                    cls_t[k, pos, t["labels"][best[pos]]] = 1.0
                    target_ltrb = ltrb[pos, best[pos]]
                    box_losses.append((reg[k, pos] - target_ltrb).abs().sum() / self.stride)
                    num_pos += int(pos.sum())
            norm = max(num_pos, 1)
            loss_cls = sigmoid_focal_loss(cls, cls_t, reduction="sum") / norm
            loss_box = (torch.stack(box_losses).sum() if box_losses else reg.sum() * 0) / norm
            return {"loss_cls": loss_cls, "loss_box": loss_box}

        def _detect(self, cls, reg, centers, images):
            from torchvision.ops import batched_nms, clip_boxes_to_image

            out = []
            for k, img in enumerate(images):
                scores = cls[k].sigmoid()  # [L, C]
                keep = scores > score_thresh
                loc, lab = keep.nonzero(as_tuple=True)
                sc = scores[loc, lab]
                c, r = centers[loc], reg[k, loc]
                boxes = torch.stack([c[:, 0] - r[:, 0], c[:, 1] - r[:, 1], c[:, 0] + r[:, 2], c[:, 1] + r[:, 3]], 1)
                boxes = clip_boxes_to_image(boxes, tuple(img.shape[-2:]))
                idx = batched_nms(boxes, sc, lab, 0.5)[:max_dets]
                out.append({"boxes": boxes[idx], "scores": sc[idx], "labels": lab[idx]})
            return out

    return TinyDetector()


@hookimpl
def detcore_detectors():
    return {"tiny_det": tiny_det}


# ----------------------------------------------------------------------
# runner hooks
# ----------------------------------------------------------------------


class Recorder:
    """Appends every runtime event to ``work_dir/events.jsonl`` and keeps a
    counter that travels through checkpoints."""

    def __init__(self):
        self.count = 0

    def _write(self, runner, event, **kw):
        if runner.is_main:
            with open(runner.work_dir / "events.jsonl", "a") as f:
                f.write(json.dumps({"event": event, "iter": runner.iter, "epoch": runner.epoch, **kw}) + "\n")

    @hookimpl
    def detcore_before_run(self, runner):
        attrs = [
            "model", "optimizer", "lr_scheduler", "cfg", "work_dir", "epoch", "iter", "max_epochs",
            "max_iters", "rank", "world_size", "is_main", "device", "train_loader", "val_dataset",
            "class_names", "logger", "stop_training", "log_scalars",
        ]
        missing = [a for a in attrs if not hasattr(runner, a)]
        self._write(runner, "before_run", missing=missing, count=self.count, class_names=runner.class_names)

    @hookimpl
    def detcore_after_run(self, runner):
        self._write(runner, "after_run", count=self.count)

    @hookimpl
    def detcore_before_train_epoch(self, runner, epoch):
        self._write(runner, "before_train_epoch")

    @hookimpl
    def detcore_after_train_epoch(self, runner, epoch):
        self._write(runner, "after_train_epoch")

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, losses):
        self.count += 1
        runner.log_scalars({"recorder_count": self.count})

    @hookimpl
    def detcore_before_val_epoch(self, runner):
        self._write(runner, "before_val_epoch")

    @hookimpl
    def detcore_after_val_epoch(self, runner, metrics):
        self._write(runner, "after_val_epoch", metrics=metrics)

    @hookimpl
    def detcore_save_checkpoint(self, runner, checkpoint):
        checkpoint.setdefault("hooks", {})["recorder"] = {"count": self.count}

    @hookimpl
    def detcore_load_checkpoint(self, runner, checkpoint):
        self.count = int(checkpoint["hooks"]["recorder"]["count"])


class LossDump:
    """Appends this rank's (local) loss of every iteration to
    ``work_dir/losses_rank<N>.jsonl``."""

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, losses):
        with open(runner.work_dir / f"losses_rank{runner.rank}.jsonl", "a") as f:
            f.write(json.dumps({"iteration": iteration, "loss": float(losses["loss"])}) + "\n")


class BadArgs:
    """A hook implementation with a misspelt argument name (``loss``)."""

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, loss):
        pass


# The targets the model was given, per training iteration (in-process runs).
SEEN_TARGETS: list = []


class TargetSpy:
    @hookimpl
    def detcore_before_train_iter(self, runner, iteration, batch):
        SEEN_TARGETS.append([{k: v for k, v in t.items()} for t in batch[1]])


def loss_dump():
    return LossDump()


def bad_args():
    return BadArgs()


def target_spy():
    return TargetSpy()


class SlowSteps:
    """Sleeps ``seconds`` after every step (a known pace for time budgets)
    and records each step's learning rate in ``runner.lrs``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    @hookimpl
    def detcore_after_train_iter(self, runner, iteration, losses):
        import time

        runner.__dict__.setdefault("lrs", []).append(runner.optimizer.param_groups[0]["lr"])
        time.sleep(self.seconds)


def recorder():
    return Recorder()


@hookimpl
def detcore_runner_hooks():
    return {
        "slow_steps": SlowSteps, "recorder": recorder, "loss_dump": loss_dump, "bad_args": bad_args,
        "target_spy": target_spy,
    }


# ----------------------------------------------------------------------
# a dataset that records which items were loaded (in-process runs)
# ----------------------------------------------------------------------

LOADED: list[int] = []


def counting_synthetic(num_images: int = 8, image_size: int = 32, num_classes: int = 3):
    """The synthetic dataset, appending every index it loads to ``LOADED``."""
    from detcore.data.synthetic import SyntheticDataset

    class Counting(SyntheticDataset):
        def __getitem__(self, idx):
            LOADED.append(int(idx))
            return super().__getitem__(idx)

    return Counting(num_images, (image_size, image_size), num_classes)


def crowd_synthetic(num_images: int = 8, image_size: int = 32, num_classes: int = 3):
    """The synthetic dataset with one crowd box (``iscrowd`` 1, label 0, the
    top-left quarter) added to every image, as COCO keeps them."""
    import torch
    from torchvision import tv_tensors

    from detcore.data.synthetic import SyntheticDataset

    class Crowd(SyntheticDataset):
        def __getitem__(self, idx):
            image, t = super().__getitem__(idx)
            h, w = image.shape[-2:]
            crowd = torch.tensor([[0.0, 0.0, w / 2, h / 2]])
            t["boxes"] = tv_tensors.wrap(torch.cat([t["boxes"].as_subclass(torch.Tensor), crowd]), like=t["boxes"])
            t["labels"] = torch.cat([t["labels"], torch.zeros(1, dtype=torch.int64)])
            t["iscrowd"] = torch.cat([t["iscrowd"], torch.ones(1, dtype=torch.int64)])
            return image, t

    return Crowd(num_images, (image_size, image_size), num_classes)


@hookimpl
def detcore_datasets():
    return {"counting_synthetic": counting_synthetic, "crowd_synthetic": crowd_synthetic}


class FixedValModel:
    """``detcore_val_model``: validate with a module that predicts one box
    ``[1, 2, 3, 4]`` (score 0.5, label 0) per image."""

    @hookimpl
    def detcore_val_model(self, runner):
        import torch

        class Fixed(torch.nn.Module):
            def forward(self, images):
                return [
                    {
                        "boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
                        "scores": torch.tensor([0.5]),
                        "labels": torch.tensor([0]),
                    }
                    for _ in images
                ]

        return Fixed()


def fixed_val_model():
    return FixedValModel()


@hookimpl(specname="detcore_runner_hooks")
def _more_runner_hooks():
    return {"fixed_val_model": fixed_val_model}
