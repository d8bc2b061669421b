"""Test plugin for the detcore-hooks training runs (``plugins = ["hooks_probe"]``).

* metric ``scripted``: returns ``values[epoch]`` for the last epoch trained
  (0-based, recorded by ``detcore_before_train_epoch``), so early stopping can
  be tested on a known metric sequence;
* records what validation saw and predicted into
  ``<work_dir>/probe/val_<iter>.pt`` (images, boxes, scores, labels), so a test
  can check which weights produced those predictions;
* saves the weights at the start of the run to ``<work_dir>/probe/initial_<iter>.pt``;
* runner hook ``raw_val_model``: returns ``runner.model`` from
  ``detcore_val_model`` with ``tryfirst``, to test pluggy's order against ema;
* runner hook ``nan_weights``: after optimizer step ``at_iter`` writes NaN
  into one parameter (a hook wrapper, so before every other
  ``after_train_iter`` implementation), as an infinite gradient would.
"""

from __future__ import annotations

from detcore import hookimpl
from detcore.testing import ScriptedMetric

_STATE: dict = {"epoch": 0, "records": []}


class EpochScriptedMetric(ScriptedMetric):
    """detcore.testing's scripted metric, indexed by the last epoch trained
    (so a resumed run continues the script where it left off)."""

    def index(self) -> int:
        return _STATE["epoch"]


class RawValModel:
    name = "raw_val_model"

    @hookimpl(tryfirst=True)
    def detcore_val_model(self, runner):
        return runner.model


class NanWeights:
    name = "nan_weights"

    def __init__(self, at_iter: int, param: str):
        self.at_iter = at_iter
        self.param = param

    @hookimpl(wrapper=True)
    def detcore_after_train_iter(self, runner, iteration, losses):
        if runner.iter == self.at_iter:
            import torch

            with torch.no_grad():
                dict(runner.model.named_parameters())[self.param].view(-1)[0] = float("nan")
        return (yield)


@hookimpl
def detcore_metrics():
    return {"scripted": EpochScriptedMetric}


@hookimpl
def detcore_runner_hooks():
    return {"raw_val_model": RawValModel, "nan_weights": NanWeights}


@hookimpl
def detcore_before_run(runner):
    if runner.is_main:
        import torch

        folder = runner.work_dir / "probe"
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
        torch.save(state, folder / f"initial_{runner.iter}.pt")


@hookimpl
def detcore_before_train_epoch(runner, epoch):
    _STATE["epoch"] = epoch


@hookimpl
def detcore_before_val_epoch(runner):
    _STATE["records"] = []


@hookimpl
def detcore_after_val_iter(runner, batch, outputs):
    images, _ = batch
    for image, out in zip(images, outputs):
        _STATE["records"].append(
            {
                "image": image.detach().cpu(),
                **{k: out[k].detach().cpu() for k in ("boxes", "scores", "labels")},
            }
        )


@hookimpl
def detcore_after_val_epoch(runner, metrics):
    if runner.is_main:
        import torch

        folder = runner.work_dir / "probe"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(_STATE["records"], folder / f"val_{runner.iter}.pt")
