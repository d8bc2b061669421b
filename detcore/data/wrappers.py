"""Dataset wrappers: ``concat``, ``repeat`` and ``class_balanced``.

They wrap datasets built from run-file tables and keep the dataset contract:
``class_names`` (checked to agree between children), ``aspect_ratios`` (for
aspect-ratio grouped batching) and, where one dataset is wrapped, its
``cat_ids`` and ``coco``. Also here: the label-mapping check that keeps a
checkpoint's classes and a test dataset's classes from drifting apart.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import torch.utils.data

from detcore.errors import CheckpointError, ConfigCheckError

__all__ = [
    "ClassBalancedDataset",
    "ConcatDataset",
    "RepeatDataset",
    "check_class_mapping",
    "class_mapping",
    "labels_per_item",
    "repeat_factors",
]


def _aspect_ratios(dataset) -> list[float] | None:
    ratios = getattr(dataset, "aspect_ratios", None)
    return None if ratios is None else list(ratios)


class ConcatDataset(torch.utils.data.ConcatDataset):
    """Datasets one after another; their ``class_names`` must be equal."""

    def __init__(self, datasets: Sequence[Any]):
        datasets = list(datasets)
        if not datasets:
            raise ConfigCheckError("concat needs at least one dataset", key="datasets")
        first = list(getattr(datasets[0], "class_names", []))
        for i, d in enumerate(datasets[1:], start=1):
            names = list(getattr(d, "class_names", []))
            if names != first:
                raise ConfigCheckError(
                    f"datasets[{i}] has class_names {names} but datasets[0] has {first}; concatenated "
                    f"datasets must use the same classes in the same order (set 'classes' on each)",
                    key=f"datasets[{i}]",
                )
        super().__init__(datasets)
        self.class_names = first
        cat_ids = [getattr(d, "cat_ids", None) for d in datasets]
        if cat_ids[0] is not None and all(c == cat_ids[0] for c in cat_ids):
            # Only a mapping every child shares is the concatenation's mapping.
            self.cat_ids = list(cat_ids[0])
        ratios = [_aspect_ratios(d) for d in datasets]
        if all(r is not None for r in ratios):
            self.aspect_ratios = [a for r in ratios for a in r]

    def locate(self, idx: int) -> tuple[Any, int]:
        """``(child dataset, index in it)`` of item ``idx``."""
        if idx < 0:
            idx += len(self)
        d = bisect.bisect_right(self.cumulative_sizes, idx)
        start = 0 if d == 0 else self.cumulative_sizes[d - 1]
        return self.datasets[d], idx - start


class _IndexedWrapper(torch.utils.data.Dataset):
    """A dataset that reads ``dataset[self.indices[i]]``."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset = dataset
        self.indices = indices
        self.class_names = list(dataset.class_names)
        ratios = _aspect_ratios(dataset)
        if ratios is not None:
            self.aspect_ratios = [ratios[i] for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, idx: int):
        return self.dataset[self.indices[idx]]

    def __getattr__(self, name: str):
        # cat_ids, coco and anything else dataset-specific come from the
        # wrapped dataset (evaluation of a wrapped val set needs them).
        if name in ("dataset", "indices") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class RepeatDataset(_IndexedWrapper):
    """The dataset ``times`` times over (fewer, longer epochs for small sets)."""

    def __init__(self, dataset, times: int):
        if times < 1:
            raise ConfigCheckError(f"times must be >= 1, got {times}", key="times")
        self.times = times
        n = len(dataset)
        super().__init__(dataset, [i % n for i in range(n * times)])


def labels_per_item(dataset) -> list[set[int]]:
    """The set of labels in each item, from annotations when the dataset can
    say (``labels_of(idx)``), else by loading every item."""
    labels_of = getattr(dataset, "labels_of", None)
    if labels_of is not None:
        return [set(labels_of(i)) for i in range(len(dataset))]
    return [set(int(v) for v in dataset[i][1]["labels"].tolist()) for i in range(len(dataset))]


def repeat_factors(item_labels: list[set[int]], oversample_thr: float) -> list[float]:
    """LVIS repeat factors: ``r(c) = max(1, sqrt(t / f(c)))`` with ``f(c)`` the
    fraction of images containing class ``c``; an image repeats ``max r(c)``
    over its classes (1 for an image without objects)."""
    n = len(item_labels)
    counts: dict[int, int] = {}
    for labels in item_labels:
        for c in labels:
            counts[c] = counts.get(c, 0) + 1
    cat_factor = {c: max(1.0, math.sqrt(oversample_thr / (k / n))) for c, k in counts.items()}
    return [max((cat_factor[c] for c in labels), default=1.0) for labels in item_labels]


class ClassBalancedDataset(_IndexedWrapper):
    """Repeat-factor sampling (LVIS, MMDetection's ClassBalancedDataset): each
    image appears ``ceil(r)`` times per epoch, where ``r`` is the largest
    repeat factor of the classes it contains."""

    def __init__(self, dataset, oversample_thr: float):
        if not 0 < oversample_thr <= 1:
            raise ConfigCheckError(f"oversample_thr must be in (0, 1], got {oversample_thr}", key="oversample_thr")
        self.oversample_thr = oversample_thr
        self.factors = repeat_factors(labels_per_item(dataset), oversample_thr)
        indices = [i for i, r in enumerate(self.factors) for _ in range(math.ceil(r))]
        super().__init__(dataset, indices)


# ----------------------------------------------------------------------
# class names and category ids: checkpoint vs dataset
# ----------------------------------------------------------------------


def class_mapping(dataset) -> dict:
    """What a checkpoint records about a dataset's labels: ``class_names`` and,
    when the dataset has them, ``cat_ids`` (label -> original category id)."""
    out = {"class_names": list(getattr(dataset, "class_names", []))}
    cat_ids = getattr(dataset, "cat_ids", None)
    if cat_ids is not None:
        out["cat_ids"] = [int(c) for c in cat_ids]
    return out


def check_class_mapping(saved: dict, dataset, *, checkpoint: str, split: str = "test") -> None:
    """Raise :class:`CheckpointError` when the classes a model was trained with
    (``saved``, from :func:`class_mapping`) differ from ``dataset``'s, naming
    both lists. Category ids are compared only when both sides have them."""
    now = class_mapping(dataset)
    names_then, names_now = list(saved.get("class_names") or []), now["class_names"]
    if names_then and names_then != names_now:
        raise CheckpointError(
            f"checkpoint '{checkpoint}' was trained with class_names {names_then} but the {split} "
            f"dataset has {names_now}; labels would be scored against the wrong classes. Give the "
            f"{split} dataset the same 'classes' list (same order) as training."
        )
    ids_then, ids_now = saved.get("cat_ids"), now.get("cat_ids")
    if ids_then is not None and ids_now is not None and list(ids_then) != list(ids_now):
        raise CheckpointError(
            f"checkpoint '{checkpoint}' maps labels to category ids {list(ids_then)} but the {split} "
            f"dataset maps them to {list(ids_now)} (class_names {names_now}); the annotation files "
            f"number their categories differently. Convert both with the same category list."
        )
