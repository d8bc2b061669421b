"""Built-in data components (plugin "detcore.data"): transforms and dataset wrappers.

Light on purpose: the transform factories import torchvision when called and
the wrapper factories import :mod:`detcore.data.wrappers` (and torch) when
called, so registering them costs nothing at ``detcore --help``.
"""

from __future__ import annotations

from detcore import hookimpl
from detcore.catalog import Sub, check_with
from detcore.data.transforms import TRANSFORMS
from detcore.errors import ConfigCheckError

# Aliases, not Sub["dataset"] inline: linters read a quoted subscript in an
# annotation as a forward reference to a name.
DatasetSpec = Sub["dataset"]


def concat(datasets: list[DatasetSpec]):
    """The listed datasets one after another (their class names must agree)."""
    from detcore.data.wrappers import ConcatDataset

    return ConcatDataset([spec() for spec in datasets])


def _check_times(args: dict, ctx) -> None:
    times = args.get("times")
    if isinstance(times, int) and times < 1:
        raise ConfigCheckError(f"times must be >= 1, got {times}", key="times")


@check_with(_check_times)
def repeat(dataset: DatasetSpec, times: int):
    """``dataset`` repeated ``times`` times per epoch."""
    from detcore.data.wrappers import RepeatDataset

    return RepeatDataset(dataset(), times)


def _check_thr(args: dict, ctx) -> None:
    thr = args.get("oversample_thr", 0.001)
    if isinstance(thr, (int, float)) and not 0 < thr <= 1:
        raise ConfigCheckError(f"oversample_thr must be in (0, 1], got {thr}", key="oversample_thr")


@check_with(_check_thr)
def class_balanced(dataset: DatasetSpec, oversample_thr: float = 0.001):
    """Repeat-factor sampling of ``dataset`` (LVIS): images with rare classes
    repeat up to ``sqrt(oversample_thr / frequency)`` times per epoch."""
    from detcore.data.wrappers import ClassBalancedDataset

    return ClassBalancedDataset(dataset(), oversample_thr)


@hookimpl
def detcore_transforms():
    return dict(TRANSFORMS)


@hookimpl
def detcore_datasets():
    return {"concat": concat, "repeat": repeat, "class_balanced": class_balanced}
