"""Dataset wrappers: lengths, sampling frequencies, class names and the
checkpoint/dataset class-mapping check."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torchvision import tv_tensors

from detcore.catalog import Catalog
from detcore.data.wrappers import (
    ClassBalancedDataset,
    ConcatDataset,
    RepeatDataset,
    check_class_mapping,
    class_mapping,
    repeat_factors,
)
from detcore.errors import CheckpointError, RunFileError
from detcore.plugins import get_plugin_manager
from detcore.runfile.components import validate_component


class ListDataset(torch.utils.data.Dataset):
    """Items whose labels are given per image; the image is 8x(8*ratio)."""

    def __init__(self, labels: list[list[int]], class_names=("a", "b", "c"), ratio: float = 1.0, cat_ids=None, tag=""):
        self.labels = labels
        self.class_names = list(class_names)
        self.aspect_ratios = [ratio] * len(labels)
        self.tag = tag
        if cat_ids is not None:
            self.cat_ids = cat_ids

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        k = len(self.labels[idx])
        boxes = tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]] * k).reshape(-1, 4), format="XYXY", canvas_size=(8, 8))
        return tv_tensors.Image(torch.zeros(3, 8, 8, dtype=torch.uint8)), {
            "boxes": boxes, "labels": torch.tensor(self.labels[idx], dtype=torch.int64),
            "image_id": f"{self.tag}{idx}", "orig_size": (8, 8),
        }


def test_concat_lengths_order_and_aspect_ratios():
    a, b = ListDataset([[0]] * 3, ratio=1.5, tag="a"), ListDataset([[1]] * 5, ratio=0.5, tag="b")
    cat = ConcatDataset([a, b])
    assert len(cat) == 8
    assert [cat[i][1]["image_id"] for i in range(8)] == ["a0", "a1", "a2", "b0", "b1", "b2", "b3", "b4"]
    assert cat.aspect_ratios == [1.5] * 3 + [0.5] * 5
    assert cat.class_names == ["a", "b", "c"]
    assert cat.locate(4) == (b, 1)


def test_concat_rejects_different_class_names():
    with pytest.raises(ValueError, match=r"datasets\[1\] has class_names \['a', 'x'\]"):
        ConcatDataset([ListDataset([[0]], ("a", "b")), ListDataset([[0]], ("a", "x"))])


def test_repeat_length_and_frequencies():
    d = ListDataset([[0], [1], [2]], ratio=2.0)
    rep = RepeatDataset(d, times=4)
    assert len(rep) == 12
    counts = Counter(rep[i][1]["image_id"] for i in range(len(rep)))
    assert counts == {"0": 4, "1": 4, "2": 4}
    assert rep.aspect_ratios == [2.0] * 12 and rep.class_names == d.class_names


def test_class_balanced_repeat_factors_and_sampling_frequencies():
    # 10 images: class 0 in all of them, class 1 in 2 of them, class 2 in 1; one empty image.
    labels = [[0]] * 6 + [[0, 1], [0, 1], [0, 2], []]
    d = ListDataset(labels)
    thr = 0.5
    # f(0) = 0.9 -> r = 1; f(1) = 0.2 -> r = sqrt(2.5); f(2) = 0.1 -> r = sqrt(5)
    factors = repeat_factors([set(x) for x in labels], thr)
    assert factors[:6] == [1.0] * 6 and factors[9] == 1.0
    assert factors[6] == pytest.approx(math.sqrt(2.5)) and factors[8] == pytest.approx(math.sqrt(5))
    cb = ClassBalancedDataset(d, oversample_thr=thr)
    counts = Counter(cb[i][1]["image_id"] for i in range(len(cb)))
    expected = {str(i): 1 for i in range(10)} | {"6": 2, "7": 2, "8": 3}  # ceil(1.58) = 2, ceil(2.24) = 3
    assert counts == expected
    assert len(cb) == sum(expected.values()) == 14
    # Class 2's share of sampled images went from 1/10 to 3/14.
    with_2 = sum(1 for i in range(len(cb)) if 2 in cb[i][1]["labels"].tolist())
    assert with_2 == 3


def test_class_balanced_uses_labels_of_without_loading():
    class NoLoad(ListDataset):
        def __getitem__(self, idx):
            raise AssertionError("items must not be loaded to count labels")

        def labels_of(self, idx):
            return set(self.labels[idx])

    cb = ClassBalancedDataset(NoLoad([[0], [0], [0], [1]]), oversample_thr=1.0)
    assert cb.indices.count(3) == 2  # f(1) = 0.25 -> r = 2


def test_wrappers_from_a_run_file_table():
    import detcore

    @detcore.hookimpl
    def detcore_datasets():
        return {"listed": lambda n, ratio=1.0: ListDataset([[0]] * n, ratio=ratio)}

    class Plugin:
        pass

    plugin = Plugin()
    plugin.detcore_datasets = detcore_datasets
    pm = get_plugin_manager(entrypoints=False)
    pm.register(plugin, name="test_listed")
    catalog = Catalog.from_plugin_manager(pm)
    table = {
        "type": "repeat",
        "times": 2,
        "dataset": {"type": "concat", "datasets": [{"type": "listed", "n": 2}, {"type": "listed", "n": 3, "ratio": 0.5}]},
    }
    validate_component(catalog, "dataset", table, "data.train")
    ds = catalog.build("dataset", table, path="data.train")
    assert len(ds) == 10 and ds.aspect_ratios == ([1.0] * 2 + [0.5] * 3) * 2
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "dataset", {"type": "repeat", "times": 0, "dataset": {"type": "listed", "n": 1}}, "data.train")
    assert err.value.key == "data.train.times"
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "dataset", {"type": "class_balanced", "oversample_thr": 2.0,
                                     "dataset": {"type": "listed", "n": 1}}, "data.train")
    assert err.value.key == "data.train.oversample_thr"
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "dataset", {"type": "concat", "datasets": [{"type": "listd", "n": 1}]}, "data.train")
    assert err.value.key == "data.train.datasets[0].type" and "did you mean 'listed'" in str(err.value)


def test_wrapper_forwards_cat_ids():
    d = ListDataset([[0]], cat_ids=[3, 5, 9])
    assert RepeatDataset(d, 2).cat_ids == [3, 5, 9]
    assert ConcatDataset([d, d]).cat_ids == [3, 5, 9]


def test_class_mapping_mismatch_names_both_lists():
    train = ListDataset([[0]], ("cat", "dog"), cat_ids=[1, 2])
    saved = class_mapping(train)
    assert saved == {"class_names": ["cat", "dog"], "cat_ids": [1, 2]}
    check_class_mapping(saved, ListDataset([[0]], ("cat", "dog"), cat_ids=[1, 2]), checkpoint="a.pth")
    with pytest.raises(CheckpointError, match=r"'a.pth' was trained with class_names \['cat', 'dog'\] but the test dataset has \['dog', 'cat'\]"):
        check_class_mapping(saved, ListDataset([[0]], ("dog", "cat"), cat_ids=[2, 1]), checkpoint="a.pth")
    with pytest.raises(CheckpointError, match=r"category ids \[1, 2\] but the test dataset maps them to \[1, 7\]"):
        check_class_mapping(saved, ListDataset([[0]], ("cat", "dog"), cat_ids=[1, 7]), checkpoint="a.pth")
