"""Transforms keep boxes, masks, labels and crowd flags aligned."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torchvision import tv_tensors

from detcore.data.transforms import TRANSFORMS, build_pipeline
from detcore.errors import RunFileError
from detcore.runfile.components import validate_component


def sample(h=40, w=60):
    """An image with two boxes whose masks fill them exactly, one crowd."""
    image = tv_tensors.Image(torch.arange(3 * h * w, dtype=torch.int64).reshape(3, h, w).remainder(256).to(torch.uint8))
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [40.0, 10.0, 58.0, 38.0]])
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[k, y1:y2, x1:x2] = 1
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
        "labels": torch.tensor([0, 2]),
        "iscrowd": torch.tensor([0, 1]),
        "masks": tv_tensors.Mask(masks),
        "image_id": 7,
        "orig_size": (h, w),
    }
    return image, target


def mask_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_horizontal_flip_by_hand(catalog):
    image, target = sample()
    pipe = build_pipeline([catalog.build("transform", {"type": "random_horizontal_flip", "p": 1.0})])
    out_img, out = pipe(image, target)
    # A box [x1, y1, x2, y2] in an image of width 60 becomes [60 - x2, y1, 60 - x1, y2].
    assert out["boxes"].tolist() == [[30.0, 5.0, 50.0, 25.0], [2.0, 10.0, 20.0, 38.0]]
    assert torch.equal(out_img, image.flip(-1))
    for k in range(2):
        assert mask_box(out["masks"][k]) == out["boxes"][k].tolist()
    assert out["labels"].tolist() == [0, 2] and out["iscrowd"].tolist() == [0, 1]
    assert out["image_id"] == 7 and out["orig_size"] == (40, 60)


def test_resize_scales_boxes_and_masks(catalog):
    image, target = sample()
    pipe = build_pipeline([catalog.build("transform", {"type": "resize", "size": 20})])
    out_img, out = pipe(image, target)
    assert out_img.shape == (3, 20, 30)
    assert out["boxes"].tolist() == [[5.0, 2.5, 15.0, 12.5], [20.0, 5.0, 29.0, 19.0]]
    assert out["masks"].shape == (2, 20, 30)
    assert out["boxes"].canvas_size == (20, 30)
    exact = build_pipeline([catalog.build("transform", {"type": "resize", "size": [80, 60]})])
    assert exact(image, target)[0].shape == (3, 80, 60)


def test_boxes_leaving_the_image_are_clipped_or_dropped_with_labels_and_masks():
    from torchvision.transforms.v2 import functional as F

    def shift_left(image, target):
        # A plain (image, target) callable, as a plugin's transform may be:
        # everything moves 35 px left, so box 0 leaves the image and box 1 is cut.
        kw = {"angle": 0.0, "translate": [-35, 0], "scale": 1.0, "shear": [0.0, 0.0]}
        moved = {k: F.affine(target[k], **kw) for k in ("boxes", "masks")}
        return F.affine(image, **kw), {**target, **moved}

    image, target = sample()
    pipe = build_pipeline([shift_left])
    _, out = pipe(image, target)
    assert out["boxes"].tolist() == [[5.0, 10.0, 23.0, 38.0]]
    assert out["labels"].tolist() == [2] and out["iscrowd"].tolist() == [1]
    assert out["masks"].shape[0] == 1
    assert mask_box(out["masks"][0]) == [5, 10, 23, 38]


@pytest.mark.parametrize(
    "table",
    [
        {"type": "random_iou_crop"},
        {"type": "random_zoom_out", "p": 1.0, "side_range": [1.0, 2.0]},
        {"type": "random_crop", "size": 32},
        {"type": "random_resize", "sizes": [24, 32, 48], "max_size": 80},
        {"type": "scale_jitter", "target_size": [40, 60], "scale_range": [0.5, 1.5]},
        {"type": "random_vertical_flip", "p": 1.0},
    ],
)
def test_geometric_transforms_keep_masks_inside_their_boxes(catalog, table):
    torch.manual_seed(0)
    for _ in range(5):
        image, target = sample()
        pipe = build_pipeline([catalog.build("transform", table)])
        out_img, out = pipe(image, target)
        h, w = out_img.shape[-2:]
        k = len(out["boxes"])
        assert out["masks"].shape == (k, h, w)
        assert len(out["labels"]) == len(out["iscrowd"]) == k
        for i in range(k):
            x1, y1, x2, y2 = out["boxes"][i].tolist()
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            if out["masks"][i].any():
                mx1, my1, mx2, my2 = mask_box(out["masks"][i])
                # Resampling can move a mask edge by a pixel against the box.
                assert mx1 >= x1 - 1.5 and my1 >= y1 - 1.5 and mx2 <= x2 + 1.5 and my2 <= y2 + 1.5


def test_photometric_transforms_leave_geometry_alone(catalog):
    torch.manual_seed(0)
    for table in ({"type": "photometric_distortion", "p": 1.0}, {"type": "color_jitter", "brightness": 0.4},
                  {"type": "random_grayscale", "p": 1.0}):
        image, target = sample()
        out_img, out = build_pipeline([catalog.build("transform", table)])(image, target)
        assert out_img.dtype == torch.uint8 and out_img.shape == image.shape
        assert torch.equal(out["boxes"], target["boxes"]) and torch.equal(out["masks"], target["masks"])


def test_sanitize_boxes_min_size(catalog):
    image, target = sample()
    pipe = build_pipeline([catalog.build("transform", {"type": "sanitize_boxes", "min_size": 19})])
    _, out = pipe(image, target)
    assert out["labels"].tolist() == [0] and out["masks"].shape[0] == 1  # box 1 is 18 px wide


def test_every_transform_is_registered_and_bad_arguments_name_the_key(catalog):
    assert set(TRANSFORMS) <= set(catalog.names("transform"))
    with pytest.raises(RunFileError, match="random_horizontal_flip' has no argument 'prob'. Its arguments are: p"):
        validate_component(catalog, "transform", {"type": "random_horizontal_flip", "prob": 0.5}, "data.train.transforms[0]")
    with pytest.raises(RunFileError) as err:
        catalog.build("transform", {"type": "resize", "size": [1, 2, 3]}, path="data.train.transforms[1]")
    assert err.value.key == "data.train.transforms[1].size"
    with pytest.raises(RunFileError, match="probability"):
        catalog.build("transform", {"type": "random_horizontal_flip", "p": 2.0}, path="t")


@pytest.mark.slow
def test_registration_module_is_light():
    code = "import sys, detcore.builtin.data; assert 'torch' not in sys.modules and 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_images_without_objects_pass_every_transform(catalog):
    tables = [{"type": "random_iou_crop"}, {"type": "random_zoom_out", "p": 1.0}, {"type": "random_crop", "size": 32},
              {"type": "photometric_distortion", "p": 1.0}, {"type": "resize", "size": 20}]
    pipe = build_pipeline([catalog.build("transform", t) for t in tables])
    image, target = sample()
    empty = {**target, "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(40, 60)),
             "labels": target["labels"][:0], "iscrowd": target["iscrowd"][:0],
             "masks": tv_tensors.Mask(torch.zeros(0, 40, 60, dtype=torch.uint8))}
    torch.manual_seed(0)
    out_img, out = pipe(image, empty)
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, *out_img.shape[-2:])


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"type": "random_horizontal_flip", "p": 2.0}, "p"),
        ({"type": "random_vertical_flip", "p": -0.1}, "p"),
        ({"type": "random_grayscale", "p": 1.5}, "p"),
        ({"type": "random_zoom_out", "side_range": [4.0, 1.0]}, "side_range"),
        ({"type": "photometric_distortion", "hue": [0.1, -0.1]}, "hue"),
        ({"type": "scale_jitter", "target_size": [1, 2, 3]}, "target_size"),
        ({"type": "resize", "size": 800, "max_size": 600}, "max_size"),
        ({"type": "resize", "size": [1, 2, 3]}, "size"),
        ({"type": "random_resize", "sizes": []}, "sizes"),
        ({"type": "sanitize_boxes", "min_size": 0.5}, "min_size"),
    ],
)
def test_config_check_rejects_bad_transform_arguments(catalog, table, key):
    # `detcore config check` validates without building: the factory's
    # attached check must reject the value and name the key.
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "transform", table, "data.train.transforms[0]")
    assert err.value.key == f"data.train.transforms[0].{key}"


def test_config_check_accepts_good_transform_arguments(catalog):
    for table in [
        {"type": "random_horizontal_flip", "p": 1.0},
        {"type": "resize", "size": 800, "max_size": 1333},
        {"type": "resize", "size": [480, 640]},
        {"type": "photometric_distortion"},
        {"type": "sanitize_boxes", "min_size": 2},
    ]:
        validate_component(catalog, "transform", table, "t")
