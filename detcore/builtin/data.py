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
TransformSpec = Sub["transform"]


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


def _check_mix(args: dict, ctx) -> None:
    for key in ("mosaic_p", "mixup_p", "copy_paste_p"):
        p = args.get(key)
        if isinstance(p, (int, float)) and not 0 <= p <= 1:
            raise ConfigCheckError(f"must be in [0, 1], got {p}", key=key)
    size = args.get("mosaic_size")
    if isinstance(size, int) and size < 8:
        raise ConfigCheckError(f"must be >= 8 pixels, got {size}", key="mosaic_size")
    close = args.get("close_last_epochs")
    if isinstance(close, int) and close < 0:
        raise ConfigCheckError(f"must be >= 0, got {close}", key="close_last_epochs")


@check_with(_check_mix)
def multi_image_mix(
    dataset: DatasetSpec,
    transforms: list[TransformSpec] = [],  # noqa: B006 - never mutated
    mosaic_p: float = 1.0,
    mosaic_size: int = 640,
    mixup_p: float = 0.0,
    mixup_alpha: float = 32.0,
    copy_paste_p: float = 0.0,
    close_last_epochs: int = 0,
):
    """Mosaic, MixUp and Copy-Paste of ``dataset``'s items, then ``transforms``
    on the mixed item; no mixing in the last ``close_last_epochs`` epochs."""
    from detcore.data.mixing import MultiImageMix

    return MultiImageMix(dataset(), transforms=transforms, mosaic_p=mosaic_p, mosaic_size=mosaic_size,
                         mixup_p=mixup_p, mixup_alpha=mixup_alpha, copy_paste_p=copy_paste_p,
                         close_last_epochs=close_last_epochs)


@hookimpl
def detcore_transforms():
    return dict(TRANSFORMS)


@hookimpl
def detcore_datasets():
    return {"concat": concat, "repeat": repeat, "class_balanced": class_balanced, "multi_image_mix": multi_image_mix}
