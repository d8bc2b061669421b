"""``train`` and ``test`` from Python: what ``detcore train`` and ``detcore
test`` do, in this process, with results returned instead of printed only.

::

    import detcore

    result = detcore.train("run.toml", overrides={"train.max_epochs": 3})
    metrics = detcore.test("run.toml", checkpoint=result.checkpoint)

No subprocess, no ``sys.argv``, no ``sys.exit``: a problem raises a
:class:`detcore.DetcoreError` subclass with the message the CLI prints.
The CLI commands are this module plus argument parsing.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs

from detcore.detector import to_set_list
from detcore.errors import DetcoreError

__all__ = ["TrainResult", "test", "test_run", "train", "train_run"]


@attrs.frozen
class TrainResult:
    """What a training run left behind.

    ``metrics``: the last validation's metrics (empty without validation);
    ``checkpoint``: the last checkpoint written (``latest.json``'s);
    ``best_checkpoint``: the best one by ``checkpoint.save_best``, if kept;
    ``iterations``: the iteration the run stopped at; ``interrupted``: the
    run was stopped by SIGINT/SIGTERM (Ctrl-C, interrupting a notebook
    kernel) after saving a checkpoint to resume from; ``exit_status``: what
    ``detcore train`` exits with (0, or 130/143 when interrupted).
    """

    work_dir: Path
    metrics: dict
    checkpoint: Path | None
    best_checkpoint: Path | None
    iterations: int
    exit_status: int = 0

    @property
    def interrupted(self) -> bool:
        return self.exit_status != 0


def _file_overrides(work_dir, device) -> list[str]:
    from detcore.runfile.toml_writer import toml_value

    out = []
    if work_dir is not None:
        out.append(f"work_dir={toml_value(os.fspath(work_dir))}")
    if device is not None:
        out.append(f"device={toml_value(str(device))}")
    return out


def train(
    run_file: str | os.PathLike,
    *,
    overrides: dict | Sequence[str] | None = None,
    resume: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    device: str | None = None,
    validate: bool = True,
    plugins: Sequence[str] = (),
    launcher: str | None = None,
) -> TrainResult:
    """Train ``run_file`` as ``detcore train`` does; returns a :class:`TrainResult`.

    ``overrides``: run-file keys to change, ``{"optimizer.lr": 0.02}`` (or
    ``--set`` strings ``["optimizer.lr=0.02"]``). ``resume``: a checkpoint
    path, or ``"auto"`` for the newest good one in the work dir.
    ``work_dir``, ``device``: shortcuts for those keys. ``validate=False``
    skips validation (``--no-validate``). ``plugins``: extra plugin modules
    (``-p``). ``launcher``: ``None`` detects torchrun/Slurm from the
    environment, so a script started with ``torchrun`` trains on every rank.
    """
    from detcore.runfile import load_run

    sets = [*to_set_list(overrides), *_file_overrides(work_dir, device)]
    run = load_run(run_file, sets, list(plugins))
    argv = ["train", os.fspath(run_file), *[a for s in sets for a in ("--set", s)]]
    return train_run(run, resume=None if resume is None else os.fspath(resume), validate=validate,
                     launcher=launcher, argv=argv)


def train_run(
    run,
    *,
    resume: str | None = None,
    validate: bool = True,
    launcher: str | None = None,
    argv: Sequence[str] | None = None,
) -> TrainResult:
    """Train a loaded :class:`detcore.runfile.Run` (``detcore train`` after
    parsing its arguments). ``argv`` is the command line to show in the
    resume hint of an interrupted run."""
    from detcore.engine import dist
    from detcore.engine.checkpoint import CheckpointFiles
    from detcore.engine.runner import Runner

    runner = Runner(run, resume=resume, no_validate=not validate, launcher=launcher,
                    argv=None if argv is None else list(argv))
    try:
        status = runner.train()
    finally:
        dist.cleanup()
    work_dir = Path(runner.work_dir)
    latest = CheckpointFiles(work_dir).pointer().get("checkpoint")
    best = (runner.best or {}).get("checkpoint")
    return TrainResult(
        work_dir=work_dir,
        metrics=dict(runner.last_metrics),
        checkpoint=work_dir / latest if latest else None,
        best_checkpoint=work_dir / best if best else None,
        iterations=int(runner.iter),
        exit_status=int(status),
    )


def test(
    run_file: str | os.PathLike,
    checkpoint: str | os.PathLike,
    *,
    split: str | None = None,
    overrides: dict | Sequence[str] | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    show_dir: str | os.PathLike | None = None,
    show_score_thr: float = 0.3,
    plots: str | os.PathLike | None = None,
    plugins: Sequence[str] = (),
    launcher: str | None = None,
    verbose: bool = True,
) -> dict[str, float]:
    """Evaluate ``checkpoint`` as ``detcore test`` does; the metrics dict
    (every ``[[metrics]]`` table's results merged, e.g. ``bbox_mAP``).

    ``split``: ``"test"`` or ``"val"`` (default: test if the run file has
    it, else val). ``out``: also write the predictions as COCO results
    JSON; ``show_dir``: draw each image's predictions scoring at least
    ``show_score_thr`` there. ``plots``: a folder for the metrics' figures
    (coco: precision-recall curves per class, confusion matrix; needs
    matplotlib). ``verbose``: print what ``detcore test``
    prints (the main process only). Under torchrun every rank predicts its
    shard and every rank gets the metrics.
    """
    from detcore.runfile import load_run

    run = load_run(run_file, [*to_set_list(overrides), *_file_overrides(None, device)], list(plugins),
                   data_splits=("val", "test"))
    return test_run(run, checkpoint, split=split, batch_size=batch_size, out=out, show_dir=show_dir,
                    show_score_thr=show_score_thr, plots=plots, launcher=launcher,
                    echo=(lambda s: print(s, flush=True)) if verbose else None)


def test_run(
    run,
    checkpoint: str | os.PathLike,
    *,
    split: str | None = None,
    batch_size: int | None = None,
    out: str | os.PathLike | None = None,
    show_dir: str | os.PathLike | None = None,
    show_score_thr: float = 0.3,
    plots: str | os.PathLike | None = None,
    launcher: str | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """:func:`test` for a loaded :class:`detcore.runfile.Run`; ``echo``
    receives the report lines (main process only): what is evaluated, each
    metric's own summary, the files written."""
    import logging

    from detcore.engine import dist
    from detcore.engine.build import build_dataset, build_metrics
    from detcore.engine.checkpoint import check_checkpoint_classes, check_checkpoint_model
    from detcore.engine.evaluation import RecordedMetric, evaluate
    from detcore.engine.inference import class_names_of, load_model, split_table
    from detcore.weights import read_checkpoint

    if batch_size is not None and batch_size < 1:
        raise DetcoreError(f"batch size must be >= 1, got {batch_size}")
    if not 0.0 <= show_score_thr <= 1.0:
        raise DetcoreError(f"show score threshold must be in [0, 1], got {show_score_thr}")
    cfg = run.cfg
    split, _ = split_table(run, split)
    info, device = dist.init_distributed(
        launcher, backend=cfg.dist.backend, device=cfg.device, timeout_s=cfg.dist.timeout_s,
    )
    say = echo if (echo is not None and info.is_main) else (lambda s: None)
    # The metrics' warnings (no predictions at all, ...) on the console.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("detcore test: %(message)s"))
    handler.setLevel(logging.WARNING)
    log = logging.getLogger("detcore")
    if info.is_main:
        log.addHandler(handler)
    try:
        dataset = build_dataset(run, split)
        ckpt = read_checkpoint(checkpoint)
        check_checkpoint_model(ckpt, run, str(checkpoint))
        # Silent class drift (a test set with other classes or category ids)
        # would score labels against the wrong classes: refuse before predicting.
        check_checkpoint_classes(ckpt, dataset, split=split, name=str(checkpoint))
        model, _ = load_model(run, checkpoint, device, checkpoint_dict=ckpt)
        metrics = [RecordedMetric(m) for m in build_metrics(run)]
        collector = PredictionCollector() if out is not None else None
        class_names = list(getattr(dataset, "class_names", []) or class_names_of(ckpt) or [])
        show = ShowWriter(Path(show_dir), class_names, show_score_thr) if show_dir is not None else None
        if not metrics and collector is None and show is None:
            raise DetcoreError(
                f"{run.path} has no [[metrics]] table and neither out (--out) nor show_dir (--show-dir) "
                f"was given: nothing to compute. Add a [[metrics]] table; installed metrics: "
                f"{', '.join(run.catalog.names('metric')) or 'none'}."
            )
        say(f"detcore test: {checkpoint} on data.{split} ({len(dataset)} images, "
            f"{info.world_size} process(es), {device})")
        t0 = time.perf_counter()
        batch_size = batch_size or cfg.data.val_batch_size or cfg.data.batch_size
        progress = _test_progress(len(dataset), batch_size, info, say if echo is not None else None)

        def on_batch(batch, outputs):
            if show is not None:
                show(batch, outputs)
            if progress is not None:
                progress.update()

        try:
            results = evaluate(
                model,
                dataset,
                [*metrics, *([collector] if collector else [])],
                device=device,
                batch_size=batch_size,
                workers=cfg.data.workers,
                amp=cfg.train.amp,
                eval_timeout_s=cfg.dist.eval_timeout_s,
                on_batch=on_batch,
            )
        finally:
            if progress is not None:
                progress.close()
        say(f"evaluated in {time.perf_counter() - t0:.1f} s")
        if metrics:
            say(format_results(metrics, results))
        if collector is not None and info.is_main:
            written = write_predictions([m.metric for m in metrics], collector.predictions or [], dataset, Path(out))
            for line in written:
                say(f"wrote {line}")
        if show is not None:
            total = sum(dist.all_gather_object(show.written)) if info.distributed else show.written
            say(f"wrote {total} drawn image(s) to {show_dir}")
        if plots is not None and info.is_main:
            drawn = [
                path
                for m in metrics
                if callable(getattr(m.metric, "save_plots", None))
                for path in m.metric.save_plots(Path(plots))
            ]
            say(f"wrote {', '.join(map(str, drawn))}" if drawn else "plots: no metric of the run file draws figures")
        return results
    finally:
        log.removeHandler(handler)
        dist.cleanup()


class PredictionCollector:
    """A metric that computes nothing and keeps the gathered predictions:
    through it ``--out`` gets exactly what the configured metrics scored."""

    def __init__(self) -> None:
        self.predictions: list[dict] | None = None

    def evaluate(self, predictions, dataset) -> dict:
        self.predictions = predictions
        return {}


class ShowWriter:
    """Draws each evaluated batch (on the image the model saw) as it comes:
    the ground truth and the predictions side by side, captioned."""

    def __init__(self, out_dir: Path, class_names: list[str], score_thr: float):
        self.out_dir = out_dir
        self.class_names = class_names
        self.score_thr = score_thr
        self.written = 0
        out_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, batch, outputs) -> None:
        from detcore.visualize import ground_truth_and_predictions, image_to_uint8, save_image

        images, targets = batch
        for img, target, out in zip(images, targets, outputs):
            keep = out["scores"] >= self.score_thr
            pred = {k: v[keep] for k, v in out.items() if k in ("boxes", "labels", "scores", "masks")}
            gt = {k: target[k] for k in ("boxes", "labels", "masks") if k in target}
            drawn = ground_truth_and_predictions(
                image_to_uint8(img.detach().cpu()), gt, pred, self.class_names, self.score_thr
            )
            image_id = target.get("image_id", target.get("_index"))
            image_id = int(image_id.item() if hasattr(image_id, "item") else image_id)
            save_image(drawn, self.out_dir / f"{image_id}.jpg")
            self.written += 1


def _test_progress(images: int, batch_size: int, info, say):
    """``detcore test``'s progress on the main process (``None`` elsewhere,
    or without a console): a bar on a terminal, else a ``test batch k/N eta``
    line about every tenth of the batches (a long test in a log file shows
    it is alive)."""
    from detcore.data.samplers import shard_batches
    from detcore.engine.progress import EvalProgress, tqdm_installed

    if say is None or not info.is_main:
        return None
    total = shard_batches(images, info.world_size, batch_size)
    bar = sys.stdout.isatty() and tqdm_installed()
    return EvalProgress(total, label="test", bar=bar, say=say, every=math.ceil(total / 10), stream=sys.stdout)


def format_results(recorded: list, results: dict[str, float]) -> str:
    """Each metric's table (:func:`~detcore.engine.evaluation.format_summaries`),
    then one line with every number for scripts."""
    from detcore.engine.evaluation import format_summaries

    # One line with every number (4 decimals), easy to grep from logs.
    return format_summaries(recorded) + "\nmetrics: " + " ".join(f"{k}={v:.4f}" for k, v in results.items())


def write_predictions(metrics: list, predictions: list[dict], dataset, out: Path) -> list[str]:
    """``--out``: the first metric with a ``dump`` method writes the
    predictions in its own results format; without one, detcore's JSON
    (one record per image: ``image_id``, ``boxes`` xyxy in original
    pixels, ``scores``, ``labels``). Returns one line per file written."""
    for metric in metrics:
        dump = getattr(metric, "dump", None)
        if callable(dump):
            return list(dump(predictions, dataset, out))
    records = [
        {
            "image_id": int(p["image_id"]),
            "boxes": p["boxes"].double().tolist(),
            "scores": p["scores"].double().tolist(),
            "labels": p["labels"].tolist(),
        }
        for p in predictions
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records))
    return [f"{out} ({len(records)} images, detcore predictions JSON)"]


# ``from detcore import test`` in a pytest module must not be collected as a test.
test.__test__ = False
