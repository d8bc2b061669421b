"""Evaluation: predict a dataset (each rank its shard), gather the
predictions on rank 0, compute the metrics once, share them with every rank.

Used by validation during training and by ``detcore test``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from detcore.engine import dist
from detcore.engine.batches import image_to_float, to_original
from detcore.errors import shorten

__all__ = ["RecordedMetric", "as_prediction", "evaluate", "format_metrics", "format_summaries", "predict"]


def as_prediction(output: dict, input_hw: tuple[int, int], target: dict) -> dict:
    """One model output as a metric prediction: :func:`~detcore.engine.batches.to_original`
    (CPU tensors in the pixels of ``target["orig_size"]``) with the
    target's ``image_id``."""
    import torch

    h, w = input_hw
    pred = to_original(output, input_hw, target.get("orig_size", (h, w)))
    image_id = target["image_id"]
    return {"image_id": int(image_id.item() if isinstance(image_id, torch.Tensor) else image_id), **pred}


def predict(
    model,
    dataset,
    *,
    device,
    batch_size: int = 1,
    workers: int = 0,
    amp: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    on_batch: Callable | None = None,
) -> list[tuple[int, dict]]:
    """``[(dataset index, prediction), ...]`` for this rank's shard
    (``rank::world_size``), in order."""
    import torch

    from detcore.data.loader import build_eval_loader
    from detcore.engine.amp import autocast

    loader = build_eval_loader(dataset, batch_size=batch_size, workers=workers, rank=rank, world_size=world_size)
    was_training = model.training
    model.eval()
    out: list[tuple[int, dict]] = []
    try:
        with torch.inference_mode(), autocast(amp, device):
            for images, targets in loader:
                imgs = [image_to_float(i, device) for i in images]
                outputs = model(imgs)
                if on_batch is not None:
                    on_batch((imgs, targets), outputs)
                for img, t, o in zip(imgs, targets, outputs):
                    out.append((int(t["_index"]), as_prediction(o, tuple(img.shape[-2:]), t)))
    finally:
        model.train(was_training)
    return out


def evaluate(
    model,
    dataset,
    metrics: Sequence,
    *,
    device,
    batch_size: int = 1,
    workers: int = 0,
    amp: str | None = None,
    eval_timeout_s: float = 7200.0,
    on_batch: Callable | None = None,
    check_stop: Callable[[], None] | None = None,
    what: str = "evaluation",
) -> dict[str, float]:
    """Every metric's ``evaluate(predictions, dataset)`` merged into one dict,
    the same on every rank.

    Each rank predicts its shard; the predictions are gathered on rank 0
    (``dist.gather_to_main``), put in dataset order (each image exactly once,
    whatever the world size) and evaluated there; the result (or rank 0's
    error) is shared back with ``dist.share_from_main``, whose wait is sized
    by ``eval_timeout_s``, not by the training collectives' timeout.

    Before the gather every rank meets the others through
    :func:`dist.wait_for_ranks`: a rank that failed while predicting stops the
    others at once, and one that hangs is named after ``eval_timeout_s``
    (``check_stop`` is called while waiting: a raised signal stops there;
    ``what`` names the step in those messages)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        mine = predict(
            model, dataset, device=device, batch_size=batch_size, workers=workers, amp=amp,
            rank=rank, world_size=world, on_batch=on_batch,
        )
    except BaseException as exc:
        try:  # tell the waiting ranks, then fail with this rank's own error
            dist.wait_for_ranks(what, eval_timeout_s, failed=shorten(f"{type(exc).__name__}: {exc}", 500))
        except Exception:  # noqa: BLE001 - the original error matters more
            pass
        raise
    dist.wait_for_ranks(what, eval_timeout_s, check_stop=check_stop)
    gathered = dist.gather_to_main(mine, timeout_s=eval_timeout_s)
    outcome = None
    error: BaseException | None = None
    if rank == 0:
        try:
            flat = sorted((p for part in gathered for p in part), key=lambda x: x[0])
            indices = [i for i, _ in flat]
            if indices != list(range(len(dataset))):
                raise RuntimeError(
                    f"evaluation gathered {len(indices)} predictions for {len(set(indices))} distinct images "
                    f"of a dataset of {len(dataset)}"
                )
            predictions = known_classes([p for _, p in flat], dataset)
            results: dict[str, float] = {}
            for metric in metrics:
                results.update({str(k): float(v) for k, v in metric.evaluate(predictions, dataset).items()})
            outcome = ("ok", results)
        except BaseException as exc:  # shared so that other ranks stop too
            error = exc
            outcome = ("error", f"{type(exc).__name__}: {exc}")
    outcome = dist.share_from_main(outcome, timeout_s=eval_timeout_s)
    if error is not None:
        raise error
    if outcome[0] == "error":
        raise RuntimeError(f"evaluation failed on rank 0: {outcome[1]}")
    return outcome[1]


def known_classes(predictions: list[dict], dataset) -> list[dict]:
    """``predictions`` without the detections whose label is not one of the
    dataset's classes (a model built with more classes than the data has:
    ``config check`` warns of it), so that no metric fails on them."""
    names = getattr(dataset, "class_names", None)
    if not names:
        return predictions
    num, dropped, out = len(names), 0, []
    for pred in predictions:
        labels = pred.get("labels")
        if labels is None or len(labels) == 0 or int(labels.max()) < num:
            out.append(pred)
            continue
        keep = labels < num
        dropped += int((~keep).sum())
        out.append({k: (v[keep] if k in _PER_DETECTION else v) for k, v in pred.items()})
    if dropped:
        logging.getLogger("detcore").warning(
            "evaluation: %d detection(s) of labels >= %d left out: the model has more classes than the "
            "dataset's %d (model.num_classes)", dropped, num, num,
        )
    return out


# The keys of a prediction that hold one entry per detection.
_PER_DETECTION = ("boxes", "scores", "labels", "masks")


def format_metrics(metrics: dict[str, float]) -> str:
    """A two-column table of metric names and values."""
    if not metrics:
        return "(no metrics)"
    width = max(len(k) for k in metrics)
    return "\n".join(f"  {k:<{width}}  {v:.4f}" for k, v in metrics.items())


class RecordedMetric:
    """A configured metric with the results of its last ``evaluate``, so that
    its own ``summary`` gets exactly the numbers it computed (pass these to
    :func:`evaluate` in place of the metrics; results exist on rank 0 only)."""

    def __init__(self, metric) -> None:
        self.metric = metric
        self.results: dict[str, float] = {}

    def evaluate(self, predictions, dataset) -> dict:
        self.results = {str(k): float(v) for k, v in self.metric.evaluate(predictions, dataset).items()}
        return self.results


def format_summaries(recorded: Sequence[RecordedMetric]) -> str:
    """The tables of the evaluated metrics, one after the other: each
    metric's own ``summary(results)`` (pycocotools' 12 lines for ``coco``),
    a two-column name/value table for a metric without one. What validation
    during training logs and ``detcore test`` prints."""
    if not recorded:
        return "(no metrics)"
    blocks = []
    for rec in recorded:
        summary = getattr(rec.metric, "summary", None)
        if not callable(summary):
            blocks.append(format_metrics(rec.results))
            continue
        try:
            blocks.append(str(summary(rec.results)))
        except Exception as exc:  # noqa: BLE001 - a display bug must not end hours of training
            blocks.append(
                f"({type(rec.metric).__name__}.summary failed: {shorten(f'{type(exc).__name__}: {exc}', 300)}; "
                f"its numbers:)\n{format_metrics(rec.results)}"
            )
    return "\n".join(blocks)
