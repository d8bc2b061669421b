"""Built-in plugin "detcore.plots": at the end of a training run, each metric
that can draw its figures (an optional ``save_plots(out_dir)`` method, see
:func:`detcore.hookspecs.detcore_metrics`) draws them from the last
validation into ``<work_dir>/plots/`` (the coco metric: precision-recall
curves per class and a confusion matrix). Block it with
``-p no:detcore.plots``."""

from __future__ import annotations

from pathlib import Path

from detcore import hookimpl
from detcore.errors import DetcoreError

PLOTS_DIR = "plots"


@hookimpl(trylast=True)
def detcore_after_run(runner) -> None:
    # Only the main process evaluated (and holds the metrics' last results).
    if not runner.is_main or not runner.last_metrics:
        return
    out_dir = Path(runner.work_dir) / PLOTS_DIR
    for metric in runner.metrics:
        save_plots = getattr(metric, "save_plots", None)
        if save_plots is None:
            continue
        name = type(metric).__name__
        try:
            written = save_plots(out_dir) or []
        except DetcoreError as exc:
            # The checkpoints are saved: a missing extra must not fail the run.
            runner.logger.warning("%s: no result plots: %s", name, exc)
            continue
        except Exception as exc:  # a bug in a metric's drawing: say so, keep the finished run's status
            runner.logger.error("%s: drawing the result plots failed: %s: %s", name, type(exc).__name__, exc)
            continue
        if written:
            runner.logger.info("%s: wrote %s", name, ", ".join(str(p) for p in written))
