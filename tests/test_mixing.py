"""Mosaic, MixUp and Copy-Paste (``multi_image_mix``, issue 18 item 6):
boxes and masks stay with the pixels they describe, per-item transforms run
after mixing, and mixing stops for the last epochs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torchvision import tv_tensors  # noqa: E402

from detcore.data.mixing import MultiImageMix, _boxes_of, set_dataset_epoch  # noqa: E402
from detcore.data.synthetic import SyntheticDataset  # noqa: E402
from detcore.data.wrappers import RepeatDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "runner_plugins"))


class WithMasks(SyntheticDataset):
    """Synthetic rectangles (one per image, so none hides another) with
    their masks: the painted pixels."""

    def __getitem__(self, idx):
        image, target = super().__getitem__(idx)
        h, w = image.shape[-2:]
        masks = torch.zeros((len(target["labels"]), h, w), dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(target["boxes"].int().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        target["masks"] = tv_tensors.Mask(masks)
        return image, target


def dataset(n=12, size=(48, 64)):
    return WithMasks(num_images=n, image_size=size, num_classes=3, max_objects=1, vary_aspect=True, seed=3)


def check_pixels_and_masks(ds, image, target, *, box_tol=1.5):
    """Every object's mask covers pixels of its class's colour, and its box
    is the mask's bounding box."""
    boxes, labels, masks = target["boxes"], target["labels"], target["masks"].bool()
    assert len(boxes) == len(labels) == len(masks) > 0
    for box, label, mask in zip(boxes, labels, masks):
        assert mask.any()
        torch.testing.assert_close(_boxes_of(mask[None])[0], box.float(), atol=box_tol, rtol=0)
        inner = mask.clone()  # away from resampled edges
        inner[:, :] = torch.nn.functional.max_pool2d((~mask)[None, None].float(), 5, 1, 2)[0, 0] == 0
        if inner.sum() > 4:
            colour = image[:, inner].float().median(dim=1).values
            assert (colour - torch.tensor(ds.palette[int(label)], dtype=torch.float32)).abs().max() <= 12


def test_mosaic_moves_boxes_and_masks_with_the_pixels():
    torch.manual_seed(0)
    ds = dataset()
    mix = MultiImageMix(ds, mosaic_p=1.0, mosaic_size=64)
    for i in range(6):
        image, target = mix[i]
        assert image.shape[-2:] == (128, 128)
        assert len(target["labels"]) >= 2  # objects of several images
        check_pixels_and_masks(ds, image, target)


def test_mixup_keeps_the_objects_of_both_and_blends_them():
    torch.manual_seed(1)
    ds = dataset()
    mix = MultiImageMix(ds, mosaic_p=0.0, mixup_p=1.0)
    image, target = mix[0]
    own = ds[0][1]
    assert len(target["labels"]) == len(own["labels"]) + 1 and torch.equal(target["labels"][:1], own["labels"])
    torch.testing.assert_close(target["boxes"][:1].float(), own["boxes"].float())
    # an object's pixels are a blend: neither the background nor its own colour
    x0, y0, x1, y1 = own["boxes"][0].int().tolist()
    centre = image[:, (y0 + y1) // 2, (x0 + x1) // 2].float()
    assert (centre - torch.tensor(ds.palette[int(own["labels"][0])], dtype=torch.float32)).abs().max() > 3


def test_copy_paste_boxes_are_the_masks_boxes_and_pasted_pixels_are_the_objects():
    torch.manual_seed(2)
    ds = dataset()
    mix = MultiImageMix(ds, mosaic_p=1.0, mosaic_size=64, copy_paste_p=1.0)
    for i in range(6):
        image, target = mix[i]
        check_pixels_and_masks(ds, image, target, box_tol=0.0)
        # the masks do not overlap: pasted objects cover what was below them
        assert target["masks"].sum(0).max() <= 1


def test_transforms_run_after_mixing_and_mixing_stops_for_the_last_epochs():
    from detcore.data.transforms import random_horizontal_flip, resize

    torch.manual_seed(3)
    ds = dataset()
    mix = RepeatDataset(MultiImageMix(ds, mosaic_size=64, transforms=[resize(32)], close_last_epochs=2), 1)
    image, target = mix[0]
    assert image.shape[-2:] == (32, 32)  # the 128 px mosaic, resized
    set_dataset_epoch(mix, 8, 10)
    image, target = mix[0]
    _, want_target = ds[0]
    assert min(image.shape[-2:]) == 32 < max(image.shape[-2:])  # one 48x64 item, resized, unmixed
    assert torch.equal(target["labels"], want_target["labels"])
    set_dataset_epoch(mix, 7, 10)
    assert mix.dataset.mixing
    flip = MultiImageMix(ds, mosaic_p=0.0, transforms=[random_horizontal_flip(1.0)])
    image, target = flip[1]
    w = ds[1][0].shape[-1]
    torch.testing.assert_close(target["boxes"][:, [2, 0]].float(), w - ds[1][1]["boxes"][:, [0, 2]].float())


def test_run_file_trains_with_mixing_and_closes_it_for_the_last_epoch(tmp_path):
    from runner_testutil import cli, tiny_det_run

    from detcore.data.mixing import MultiImageMix as Mix
    from detcore.testing import write_runfile

    seen = []
    original = Mix.set_epoch

    def spy(self, epoch, max_epochs):
        original(self, epoch, max_epochs)
        seen.append((epoch, self.mixing))

    Mix.set_epoch = spy
    try:
        run = tiny_det_run(train={"max_epochs": 3})
        run["data"]["train"] = {
            "type": "multi_image_mix", "mosaic_size": 32, "mixup_p": 0.5, "close_last_epochs": 1,
            "transforms": [{"type": "resize", "size": 32}], "dataset": run["data"]["train"],
        }
        run = write_runfile(tmp_path / "run.toml", run)
        assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 0
    finally:
        Mix.set_epoch = original
    assert seen == [(0, True), (1, True), (2, False)]


def test_docs_example_is_a_valid_run_file_table(tmp_path):
    """docs/data.md's multi_image_mix table, as written, passes the
    run-file check and builds."""
    import re

    from detcore.runfile.loader import tomllib

    doc = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    block = re.search(r"<!-- mixing-example -->\n```toml\n(.*?)\n```", doc, re.S).group(1)
    from runner_testutil import cli

    from detcore.testing import write_runfile

    write_runfile(tmp_path / "run.toml", '[model]\ntype = "fcos"\nnum_classes = 3\nbackbone = { type = "tiny" }\n'
                                         '[train]\nmax_epochs = 4\n' + block + "\n")

    assert cli("config", "check", str(tmp_path / "run.toml")) == 0
    from detcore.catalog import Catalog
    from detcore.plugins import get_plugin_manager
    from detcore.runfile.components import validate_component

    catalog = Catalog.from_plugin_manager(get_plugin_manager(entrypoints=False))
    table = tomllib.loads(block)["data"]["train"]
    validate_component(catalog, "dataset", table, "data.train")
    ds = catalog.build("dataset", table, path="data.train")
    image, target = ds[0]
    assert image.shape[-2:] == (320, 320) and len(target["boxes"]) == len(target["labels"])


def test_closing_the_mix_with_persistent_workers_is_a_run_file_error(tmp_path, capsys):
    from runner_testutil import cli, tiny_det_run

    from detcore.testing import write_runfile

    run = tiny_det_run(train={"max_epochs": 3}, data={"workers": 1, "persistent_workers": True})
    run["data"]["train"] = {
        "type": "multi_image_mix", "mosaic_size": 32, "close_last_epochs": 1, "dataset": run["data"]["train"]
    }
    run = write_runfile(tmp_path / "run.toml", run)
    assert cli("train", str(run), "--work-dir", str(tmp_path / "w")) == 2
    err = capsys.readouterr().err
    assert "data.persistent_workers" in err and "close_last_epochs" in err and "Traceback" not in err
