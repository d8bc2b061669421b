"""Records that used to pass ``detcore coco check`` and ``detcore config
check`` and then crash a DataLoader worker or vanish (issue 16, items 7-8):
each is now named by both checks (file, record id, key), through the real
CLI, and the dataset refuses it the same way at train time."""

from __future__ import annotations

import json
import logging

import pytest

from detcore.testing import assert_user_error, run_detcore

pytest.importorskip("pycocotools")

from detcore_coco.testing import write_coco, write_image  # noqa: E402

CATS = [{"id": 1, "name": "thing"}]


def _files(tmp_path, images=None, anns=None, transforms='[{ type = "resize", size = 32 }]'):
    """Three 40x30 images with one box each, a run file training on them;
    ``images``/``anns`` replace records by index."""
    for i in range(3):
        write_image(str(tmp_path / "img" / f"{i}.png"), 40, 30)
    imgs = [{"id": i + 1, "file_name": f"{i}.png", "width": 40, "height": 30} for i in range(3)]
    boxes = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 10, 10]} for i in range(3)]
    for i, rec in (images or {}).items():
        imgs[i] = {**imgs[i], **rec}
    for i, rec in (anns or {}).items():
        boxes[i] = {**boxes[i], **rec}
    # json.dump writes NaN / Infinity as the bare literals other tools emit.
    (tmp_path / "ann.json").write_text(json.dumps({"images": imgs, "annotations": boxes, "categories": CATS}))
    (tmp_path / "run.toml").write_text(
        '[model]\ntype = "fcos"\nnum_classes = 1\nbackbone = { type = "tiny" }\n'
        '[data.train]\ntype = "coco"\nann_file = "ann.json"\nimg_dir = "img"\n'
        f"transforms = {transforms}\n"
        "[train]\nmax_iters = 1\n"
    )
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize(
    "images, anns, kind, named",
    [
        ({1: {"width": 0}}, None, "bad_image_size", ["images[1] (image id 2, '1.png'): width 0"]),
        ({2: {"height": 0}}, None, "bad_image_size", ["images[2] (image id 3, '2.png'): height 0"]),
        (None, {1: {"bbox": [float("nan"), 2, 10, 10]}}, "malformed_bbox", ["annotation id 2: [nan, 2, 10, 10]"]),
        (None, {0: {"bbox": [2, 2, float("inf"), 10]}}, "malformed_bbox", ["annotation id 1: [2, 2, inf, 10]"]),
    ],
    ids=["width0", "height0", "nan_bbox", "inf_bbox"],
)
def test_bad_record_is_named_by_coco_check_and_config_check(tmp_path, images, anns, kind, named):
    _files(tmp_path, images, anns)
    proc = run_detcore("coco", "check", "ann.json", "img", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{kind}: 1" in proc.stdout
    for text in named:
        assert text in proc.stdout, proc.stdout

    proc = run_detcore("config", "check", "run.toml", cwd=tmp_path)
    err = assert_user_error(proc, 2)
    assert "key 'data.train.ann_file'" in err and "annotation file 'ann.json'" in err
    if kind == "bad_image_size":
        key = "width" if "width" in named[0] else "height"
        idx = 1 if key == "width" else 2
        assert f"images[{idx}] (id {idx + 1}, '{idx}.png') has {key} 0" in err
    else:
        assert "has a malformed bbox" in err and "finite numbers" in err


def test_zero_size_image_is_refused_by_the_dataset_not_dropped(tmp_path):
    """Built directly (as ``train`` does), the dataset refuses the record
    instead of a ZeroDivisionError in aspect_ratios or a silent drop by
    filter_empty."""
    from detcore_coco.dataset import CocoDataset

    from detcore.errors import ConfigCheckError

    _files(tmp_path, {1: {"width": 0}})
    for filter_empty in (False, True):
        with pytest.raises(ConfigCheckError, match=r"images\[1\] \(id 2, '1.png'\) has width 0"):
            CocoDataset(str(tmp_path / "ann.json"), str(tmp_path / "img"), filter_empty=filter_empty)


def test_nan_bbox_is_refused_by_the_dataset_not_dropped(tmp_path):
    from detcore_coco.dataset import CocoDataset

    from detcore.errors import ConfigCheckError

    _files(tmp_path, anns={2: {"bbox": [float("nan"), float("nan"), 5, 5]}})
    with pytest.raises(ConfigCheckError, match=r"annotations\[2\] \(id 3\) has a malformed bbox \[nan, nan, 5, 5\]"):
        CocoDataset(str(tmp_path / "ann.json"), str(tmp_path / "img"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "transform, message",
    [
        ('{ type = "resize", size = 32, max_size = 32 }', "max_size (32) must be greater than size (32)"),
        ('{ type = "resize", size = 0 }', "size must be at least 1 pixel, got 0"),
        ('{ type = "resize", size = [0, 16] }', "size must be at least 1 pixel, got [0, 16]"),
        ('{ type = "random_resize", sizes = [16, -1] }', "sizes must be at least 1 pixel, got [16, -1]"),
        ('{ type = "random_crop", size = 0 }', "size must be at least 1 pixel, got 0"),
    ],
    ids=["max_size_equal", "size0", "hw0", "random_resize_negative", "crop0"],
)
def test_resize_sizes_torchvision_rejects_later_fail_config_check(tmp_path, transform, message):
    _files(tmp_path, transforms=f"[{transform}]")
    proc = run_detcore("config", "check", "run.toml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "key 'data.train.transforms[0]." in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_max_size_equal_to_size_would_fail_in_torchvision():
    """The reference: torchvision's Resize accepts max_size == size when built
    and raises on the first image, which is what config check now prevents."""
    import torch
    from torchvision.transforms import v2

    from detcore.data.transforms import resize
    from detcore.errors import ConfigCheckError

    with pytest.raises(ValueError, match="max_size"):
        v2.Resize(32, max_size=32)(torch.zeros(3, 30, 40, dtype=torch.uint8))
    with pytest.raises(ConfigCheckError, match="must be greater than size"):
        resize(32, max_size=32)
    assert resize(32, max_size=33)(torch.zeros(3, 30, 40, dtype=torch.uint8)).shape[-2:] == (25, 33)


# --------------------------------------------------------------------------
# images far larger than the input size (item 8)
# --------------------------------------------------------------------------


def _large(tmp_path, ext: str):
    """One 2400x1800 image (over 4x a 128-pixel input) with one box."""
    write_image(str(tmp_path / "img" / f"big.{ext}"), 2400, 1800)
    write_coco(
        str(tmp_path / "big.json"),
        [{"id": 5, "file_name": f"big.{ext}", "width": 2400, "height": 1800}],
        [{"image_id": 5, "category_id": 1, "bbox": [600, 450, 1200, 900]}],
        CATS,
    )


@pytest.mark.slow
def test_coco_check_warns_about_images_far_above_the_input_size(tmp_path):
    _large(tmp_path, "jpg")
    proc = run_detcore("coco", "check", "big.json", "img", "--input-size", "128", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a warning, not a problem
    assert "OK (1 warning(s))" in proc.stdout
    assert "warning: large_image: 1" in proc.stdout
    assert "image id 5 'img/big.jpg': 2400x1800, over 4x the input size 128" in proc.stdout
    proc = run_detcore("coco", "check", "big.json", "img", cwd=tmp_path)  # default input size 1333
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout


def test_large_jpeg_is_decoded_at_reduced_size_with_boxes_scaled(tmp_path):
    import torch
    from detcore_coco.dataset import CocoDataset

    from detcore.data.image_io import read_image
    from detcore.data.transforms import resize

    _large(tmp_path, "jpg")
    path = tmp_path / "img" / "big.jpg"
    assert read_image(path).shape == (3, 1800, 2400)
    # JPEG's 1/8 scale is the largest reduction that keeps 1/10 of the size.
    assert read_image(path, min_scale=0.1).shape == (3, 225, 300)
    assert read_image(path, min_scale=0.2).shape == (3, 450, 600)
    # Not far larger than what is kept (under 4x): decoded whole, as before.
    assert read_image(path, min_scale=0.3).shape == (3, 1800, 2400)

    ds = CocoDataset(str(tmp_path / "big.json"), str(tmp_path / "img"), transforms=[resize(128)])
    assert ds.transforms.min_scale(1800, 2400) == pytest.approx(128 / 1800)
    assert ds._load(0).shape == (3, 225, 300)  # not the 13 MB full decode
    image, target = ds[0]
    assert image.shape == (3, 128, 170)
    # The box covers the middle half of the image, at whatever size it was decoded.
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor), torch.tensor([[42.5, 32.0, 127.5, 96.0]]), atol=0.6, rtol=0
    )
    assert target["orig_size"] == (1800, 2400)  # evaluation maps back to the file's size
    full = CocoDataset(str(tmp_path / "big.json"), str(tmp_path / "img"), transforms=[resize(1000)])
    assert full._load(0).shape == (3, 1800, 2400)  # not far larger than the input: full decode


def test_large_png_is_warned_about_once_naming_the_file(tmp_path, caplog):
    from detcore_coco.dataset import CocoDataset

    from detcore.data.transforms import random_horizontal_flip, resize

    _large(tmp_path, "png")
    ds = CocoDataset(
        str(tmp_path / "big.json"), str(tmp_path / "img"), transforms=[random_horizontal_flip(), resize(128)]
    )
    with caplog.at_level(logging.WARNING, logger="detcore.data"):
        for _ in range(3):
            image, _ = ds[0]
    assert image.shape == (3, 128, 170)
    warned = [r.getMessage() for r in caplog.records if "big.png" in r.getMessage()]
    assert len(warned) == 1, warned
    assert "is 2400x1800 pixels, over 4x what the transforms keep of it" in warned[0]


@pytest.mark.slow
def test_documented_input_size_check_runs_as_written(tmp_path):
    """The `--input-size` command of docs/coco.md, run as written on the demo data."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "coco.md").read_text()
    line = next(x for x in doc.splitlines() if x.startswith("detcore coco check") and "--input-size" in x)
    assert run_detcore("coco", "make-shapes", "data/shapes", "--train", "4", "--val", "2", cwd=tmp_path).returncode == 0
    proc = run_detcore(*line.split()[1:], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr
