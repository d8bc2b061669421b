"""``visualize``: ground truth next to predictions for a few validation images."""

from __future__ import annotations

from pathlib import Path

import torch

from detcore import ground_truth_and_predictions, hookimpl, image_to_uint8, save_image


class VisualizeHook:
    """See :func:`detcore_hooks.plugin.visualize`.

    Writes ``<work_dir>/<out_dir>/epoch_<E>/<image_id>.png`` (``E``: the
    1-based epoch just trained; ``iter_<N>`` in iteration-based runs): the ground truth on the left, the predictions with
    ``score >= score_thr`` on the right, each under a caption. Only the main process draws, from the
    first images of its share of the validation set.
    """

    name = "visualize"

    def __init__(self, *, num_images: int, score_thr: float, interval: int, out_dir: str, draw_masks: bool):
        self.num_images = num_images
        self.score_thr = score_thr
        self.interval = interval
        self.out_dir = out_dir
        self.draw_masks = draw_masks
        self._collect = False
        self._items: list = []
        self._validations = 0
        self.written: list[Path] = []
        self._epoch = 0  # last epoch trained (runner.epoch has moved on at epoch-end validation)

    @hookimpl
    def detcore_before_train_epoch(self, runner, epoch: int) -> None:
        self._epoch = epoch

    @hookimpl
    def detcore_before_val_epoch(self, runner) -> None:
        self._validations += 1
        self._collect = runner.is_main and (self._validations - 1) % self.interval == 0
        self._items = []

    @hookimpl
    def detcore_after_val_iter(self, runner, batch, outputs: list) -> None:
        if not self._collect or len(self._items) >= self.num_images:
            return
        images, targets = batch
        for image, target, out in zip(images, targets, outputs):
            if len(self._items) >= self.num_images:
                break
            keep = out["scores"] >= self.score_thr
            pred = {k: out[k][keep].detach().cpu() for k in ("boxes", "labels", "scores")}
            if self.draw_masks and "masks" in out:
                pred["masks"] = out["masks"][keep].detach().cpu()
            gt = {k: torch.as_tensor(target[k]).detach().cpu() for k in ("boxes", "labels")}
            if self.draw_masks and "masks" in target:
                gt["masks"] = torch.as_tensor(target["masks"]).detach().cpu()
            image_id = int(target["image_id"]) if "image_id" in target else len(self._items)
            self._items.append((image_id, image_to_uint8(image.detach().cpu()), gt, pred))

    @hookimpl
    def detcore_after_val_epoch(self, runner, metrics: dict) -> None:
        if not self._collect:
            return
        self._collect = False
        sub = f"epoch_{self._epoch + 1:03d}" if runner.max_epochs else f"iter_{runner.iter:07d}"
        folder = Path(runner.work_dir) / self.out_dir / sub
        names = runner.class_names
        for image_id, image, gt, pred in self._items:
            drawn = ground_truth_and_predictions(image, gt, pred, names, self.score_thr)
            self.written.append(save_image(drawn, folder / f"{image_id}.png"))
        if self._items:
            runner.logger.info("visualize: wrote %d image(s) to %s", len(self._items), folder)
        self._items = []
