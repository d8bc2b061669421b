"""The coco dataset: classes subsets, crowd regions, masks, filtering,
EXIF orientation, and every bad-data case with the error it must give."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from detcore_coco.annfile import AnnotationError, load_coco_json  # noqa: E402
from detcore_coco.dataset import CocoDataset  # noqa: E402
from detcore_coco.testing import write_coco, write_image  # noqa: E402

from detcore.catalog import Catalog  # noqa: E402
from detcore.data.image_io import ImageReadError  # noqa: E402
from detcore.errors import RunFileError  # noqa: E402
from detcore.plugins import get_plugin_manager  # noqa: E402
from detcore.runfile.components import validate_component  # noqa: E402
from detcore.testing import run_detcore  # noqa: E402

CATS = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 11, "name": "bird"}]


@pytest.fixture(scope="module")
def catalog():
    return Catalog.from_plugin_manager(get_plugin_manager())


@pytest.fixture
def coco_dir(tmp_path):
    """4 images: 1 has a cat, a bird and a crowd of birds; 2 only a dog; 3 a
    bird with an RLE mask; 4 is small (20 px) with a cat."""
    img_dir = tmp_path / "images"
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.png", "width": 40, "height": 40},
        {"id": 3, "file_name": "c.jpg", "width": 32, "height": 32},
        {"id": 4, "file_name": "d.jpg", "width": 20, "height": 30},
    ]
    for im in images:
        write_image(str(img_dir / im["file_name"]), im["width"], im["height"])
    rle_mask = np.zeros((32, 32), dtype=np.uint8)
    rle_mask[4:20, 8:24] = 1
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(rle_mask))
    rle["counts"] = rle["counts"].decode("ascii")
    anns = [
        {"image_id": 1, "category_id": 3, "bbox": [4, 6, 20, 10], "segmentation": [[4, 6, 24, 6, 24, 16, 4, 16]]},
        {"image_id": 1, "category_id": 11, "bbox": [30, 20, 10, 12], "segmentation": [[30, 20, 40, 20, 35, 32]]},
        {"image_id": 1, "category_id": 11, "bbox": [40, 30, 20, 15], "iscrowd": 1,
         "segmentation": {"size": [48, 64], "counts": [48 * 40 + 30, 15, 33, 15, 33, 15] + [0] * 0}},
        {"image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 20]},
        {"image_id": 3, "category_id": 11, "bbox": [8, 4, 16, 16], "segmentation": rle},
        {"image_id": 4, "category_id": 3, "bbox": [2, 2, 10, 10]},
        {"image_id": 4, "category_id": 3, "bbox": [5, 5, 0.5, 10]},  # under a pixel wide: dropped
    ]
    ann_file = write_coco(str(tmp_path / "ann.json"), images, anns, CATS)
    return tmp_path, ann_file, str(img_dir)


def test_all_categories_sorted_by_id(coco_dir):
    _, ann, img_dir = coco_dir
    ds = CocoDataset(ann, img_dir)
    assert ds.class_names == ["cat", "dog", "bird"] and ds.cat_ids == [3, 7, 11]
    assert len(ds) == 4 and ds.img_ids == [1, 2, 3, 4]
    assert ds.aspect_ratios == [64 / 48, 1.0, 1.0, 20 / 30]
    assert ds.coco.getImgIds() == [1, 2, 3, 4]
    image, t = ds[3]
    assert image.shape == (3, 30, 20) and image.dtype == torch.uint8
    assert t["boxes"].tolist() == [[2.0, 2.0, 12.0, 12.0]]  # the 0.5 px wide box is gone
    assert t["labels"].tolist() == [0] and t["image_id"] == 4 and t["orig_size"] == (30, 20)


def test_classes_subset_maps_labels_and_keeps_crowd_as_ignore(coco_dir):
    _, ann, img_dir = coco_dir
    ds = CocoDataset(ann, img_dir, classes=["bird", "cat"])
    assert ds.class_names == ["bird", "cat"] and ds.cat_ids == [11, 3]
    _, t = ds[0]
    assert t["labels"].tolist() == [1, 0, 0]  # cat, bird, crowd of birds
    assert t["iscrowd"].tolist() == [0, 0, 1]
    assert t["boxes"].tolist()[2] == [40.0, 30.0, 60.0, 45.0]
    _, t2 = ds[1]  # the dog image: nothing of the selected classes
    assert len(t2["boxes"]) == 0 and t2["labels"].dtype == torch.int64
    assert ds.labels_of(0) == {0, 1}  # crowd regions do not count
    no_crowd = CocoDataset(ann, img_dir, classes=["bird", "cat"], keep_crowd=False)
    assert no_crowd[0][1]["iscrowd"].tolist() == [0, 0]


def test_filter_empty_and_min_size(coco_dir):
    _, ann, img_dir = coco_dir
    ds = CocoDataset(ann, img_dir, classes=["bird", "cat"], filter_empty=True)
    assert ds.img_ids == [1, 3, 4]
    ds = CocoDataset(ann, img_dir, min_size=25)
    assert ds.img_ids == [1, 2, 3]


def test_polygon_rle_and_crowd_masks(coco_dir):
    _, ann, img_dir = coco_dir
    ds = CocoDataset(ann, img_dir, with_masks=True)
    _, t = ds[0]
    masks = t["masks"]
    assert masks.shape == (3, 48, 64) and masks.dtype == torch.uint8
    ys, xs = torch.nonzero(masks[0], as_tuple=True)
    assert (xs.min().item(), xs.max().item(), ys.min().item(), ys.max().item()) == (4, 23, 6, 15)
    assert masks[2].sum() > 0  # the crowd's uncompressed RLE
    _, t3 = ds[2]
    expected = torch.zeros(32, 32, dtype=torch.uint8)
    expected[4:20, 8:24] = 1
    assert torch.equal(t3["masks"][0], expected)
    _, t2 = ds[1]  # no segmentation: the box is the mask
    assert t2["masks"][0].sum().item() == 400


def test_transforms_from_the_run_file(coco_dir, catalog):
    _, ann, img_dir = coco_dir
    table = {"type": "coco", "ann_file": ann, "img_dir": img_dir, "with_masks": True,
             "transforms": [{"type": "random_horizontal_flip", "p": 1.0}, {"type": "resize", "size": 24}]}
    validate_component(catalog, "dataset", table, "data.train")
    ds = catalog.build("dataset", table, path="data.train")
    image, t = ds[0]
    assert image.shape == (3, 24, 32)
    # cat box [4, 6, 24, 16] in a 64 px wide image: flipped to [40, 6, 60, 16], then halved.
    assert t["boxes"].tolist()[0] == [20.0, 3.0, 30.0, 8.0]
    assert t["masks"].shape == (3, 24, 32) and t["orig_size"] == (48, 64)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high; orientation 6 means "rotate 90 degrees clockwise to display".
    write_image(str(tmp_path / "rot.jpg"), 40, 20, exif_orientation=6)
    ann = write_coco(str(tmp_path / "a.json"), [{"id": 1, "file_name": "rot.jpg", "width": 20, "height": 40}],
                     [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}], [{"id": 1, "name": "x"}])
    image, _ = CocoDataset(ann, str(tmp_path))[0]
    assert image.shape == (3, 40, 20)
    # The white corner square was top-left as stored; displayed, it is top-right.
    assert image[:, 2, -2].min() > 240 and image[:, 2, 1].min() < 200


def test_pil_fallback_for_formats_torchvision_does_not_decode(tmp_path):
    write_image(str(tmp_path / "x.bmp"), 16, 12)
    ann = write_coco(str(tmp_path / "a.json"), [{"id": 1, "file_name": "x.bmp", "width": 16, "height": 12}],
                     [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}], [{"id": 1, "name": "x"}])
    image, _ = CocoDataset(ann, str(tmp_path))[0]
    assert image.shape == (3, 12, 16) and image[:, 0, 0].tolist() == [255, 255, 255]


# ---------------------------------------------------------------------------
# bad data
# ---------------------------------------------------------------------------


def test_missing_image_is_an_error_naming_file_and_record(coco_dir, caplog):
    root, ann, img_dir = coco_dir
    os.remove(os.path.join(img_dir, "b.png"))
    with pytest.raises(ImageReadError, match=r"1 image file\(s\).*b\.png' \(image id 2\).*skip_bad_images"):
        CocoDataset(ann, img_dir)
    with caplog.at_level(logging.WARNING, logger="detcore.data"):
        ds = CocoDataset(ann, img_dir, skip_bad_images=True)
    assert ds.img_ids == [1, 3, 4] and ds.skipped_images == 1
    assert "skipped 1 image(s)" in caplog.text and "b.png" in caplog.text


def test_corrupt_image_is_an_error_or_a_counted_warning(coco_dir, caplog):
    root, ann, img_dir = coco_dir
    with open(os.path.join(img_dir, "c.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not a jpeg")
    ds = CocoDataset(ann, img_dir)
    ds[0]
    with pytest.raises(ImageReadError, match=r"c\.jpg.*image id 3 of '.*ann\.json'"):
        ds[2]
    skipping = CocoDataset(ann, img_dir, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="detcore.data"):
        _, t = skipping[2]
    assert t["image_id"] == 4  # the next readable image
    assert skipping.skipped_images == 1 and "c.jpg" in caplog.text and "1 bad image(s) so far" in caplog.text


def test_corrupt_image_in_a_worker_process_names_the_file(coco_dir):
    root, ann, img_dir = coco_dir
    with open(os.path.join(img_dir, "c.jpg"), "wb") as f:
        f.write(b"garbage")
    ds = CocoDataset(ann, img_dir)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=1, collate_fn=list)
    with pytest.raises(ImageReadError, match=r"c\.jpg"):
        list(loader)


def test_image_size_differing_from_the_file_is_an_error(coco_dir):
    root, ann, img_dir = coco_dir
    write_image(os.path.join(img_dir, "a.jpg"), 50, 48)
    with pytest.raises(ImageReadError, match=r"a\.jpg' \(image id 1 .*\) is 50x48 pixels but the annotation file says 64x48"):
        CocoDataset(ann, img_dir)[0]


def test_malformed_json_names_file_and_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n  "images": [],\n  "annotations": [,]\n}\n')
    with pytest.raises(RunFileError, match=r"bad\.json' is not valid JSON: .* at line 3, column"):
        validate_component(Catalog.from_plugin_manager(get_plugin_manager()),
            "dataset", {"type": "coco", "ann_file": str(p), "img_dir": str(tmp_path)}, "data.train")


@pytest.mark.parametrize(
    "ann, message",
    [
        ({"id": 5, "image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1]}, r"annotations\[0\] \(id 5\) references image_id 99, which is not in 'images'"),
        ({"id": 6, "image_id": 1, "category_id": 42, "bbox": [0, 0, 1, 1]}, r"annotations\[0\] \(id 6\) references category_id 42, which is not in 'categories'"),
        ({"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}, r"annotations\[0\] \(id 7\) has a malformed bbox"),
        ({"id": 8, "image_id": 1, "category_id": 1}, r"annotations\[0\] lacks 'bbox'"),
    ],
)
def test_annotations_referencing_unknown_records_name_the_record(tmp_path, ann, message):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
                                "annotations": [ann], "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(AnnotationError, match=message):
        load_coco_json(str(path))
    with pytest.raises(RunFileError, match=message) as err:
        Catalog.from_plugin_manager(get_plugin_manager()).build(
            "dataset", {"type": "coco", "ann_file": str(path), "img_dir": str(tmp_path)}, path="data.val")
    assert err.value.key == "data.val.ann_file"


# ---------------------------------------------------------------------------
# run-file checks (what `detcore config check` and `detcore train` run first)
# ---------------------------------------------------------------------------


def test_missing_ann_file_names_the_key(catalog, tmp_path):
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "dataset", {"type": "coco", "ann_file": "nope/train.json", "img_dir": str(tmp_path)}, "data.train")
    assert err.value.key == "data.train.ann_file"
    assert "'nope/train.json' not found" in str(err.value) and "current directory" in str(err.value)
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "dataset", {"type": "coco", "img_dir": str(tmp_path)}, "data.val")
    assert "needs argument 'ann_file'" in str(err.value)


def test_class_name_not_in_file_names_the_closest_category(catalog, coco_dir):
    _, ann, img_dir = coco_dir
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "dataset", {"type": "coco", "ann_file": ann, "img_dir": img_dir, "classes": ["cat", "Dog"]}, "data.train")
    assert err.value.key == "data.train.classes"
    assert "class 'Dog' is not a category" in str(err.value) and "closest category is 'dog'" in str(err.value)


def test_no_annotated_image_after_filtering_is_an_error(catalog, tmp_path):
    write_image(str(tmp_path / "i" / "a.jpg"), 8, 8)
    ann = write_coco(str(tmp_path / "a.json"), [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}],
                     [{"image_id": 1, "category_id": 2, "bbox": [1, 1, 3, 3]}],
                     [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}])
    with pytest.raises(RunFileError, match=r"none of the 1 images .* has an annotation of the classes \['person'\]") as err:
        validate_component(catalog, "dataset", {"type": "coco", "ann_file": ann, "img_dir": str(tmp_path / "i"), "classes": ["person"]}, "data.train")
    assert err.value.key == "data.train.classes"
    with pytest.raises(ValueError, match="none of the 1 images"):
        CocoDataset(ann, str(tmp_path / "i"), classes=["person"])


PLUGIN = '''
import detcore


def tiny_det(num_classes: int):
    raise NotImplementedError("config check never builds the model")


@detcore.hookimpl
def detcore_detectors():
    return {"tiny_det": tiny_det}
'''


@pytest.mark.slow
def test_config_check_reports_class_names_before_anything_heavy(tmp_path, coco_dir):
    _, ann, img_dir = coco_dir
    (tmp_path / "tiny_det_plugin.py").write_text(PLUGIN)
    run = tmp_path / "run.toml"
    run.write_text(
        'plugins = ["tiny_det_plugin"]\n[model]\ntype = "tiny_det"\nnum_classes = 2\n'
        f'[data.train]\ntype = "coco"\nann_file = "{ann}"\nimg_dir = "{img_dir}"\nclasses = ["cat", "brid"]\n'
    )
    proc = run_detcore("config", "check", run, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "key 'data.train.classes'" in proc.stderr and "class 'brid'" in proc.stderr and "closest category is 'bird'" in proc.stderr
    assert "Traceback" not in proc.stderr
    run.write_text(run.read_text().replace('"brid"', '"bird"'))
    proc = run_detcore("config", "check", run, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_plugin_and_dataset_check_stay_light(coco_dir):
    """`detcore --help` and the run-file check of a coco table import neither
    torch nor pycocotools."""
    _, ann, img_dir = coco_dir
    code = f"""
import sys
from detcore.cli.main import main
try:
    main(["--help"])
except SystemExit:
    pass
from detcore.catalog import Catalog
from detcore.runfile.components import validate_component
from detcore.plugins import get_plugin_manager
catalog = Catalog.from_plugin_manager(get_plugin_manager())
validate_component(catalog, "dataset", {{"type": "coco", "ann_file": {ann!r}, "img_dir": {img_dir!r}, "classes": ["cat"],
                  "transforms": [{{"type": "resize", "size": 32}}]}}, "data.train")
validate_component(catalog, "metric", {{"type": "coco"}}, "metrics[0]")
heavy = [m for m in ("torch", "torchvision", "pycocotools", "numpy") if m in sys.modules]
assert not heavy, heavy
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _export_with_supercategory(tmp_path):
    """A Roboflow-style export: category 0 is the supercategory "pieces",
    listed but never annotated."""
    write_image(str(tmp_path / "i" / "a.jpg"), 16, 16)
    return write_coco(str(tmp_path / "chess.json"), [{"id": 1, "file_name": "a.jpg", "width": 16, "height": 16}],
                      [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                       {"image_id": 1, "category_id": 2, "bbox": [6, 6, 5, 5]}],
                      [{"id": 0, "name": "pieces", "supercategory": "none"},
                       {"id": 1, "name": "black-king", "supercategory": "pieces"},
                       {"id": 2, "name": "white-king", "supercategory": "pieces"}])


def test_a_category_without_annotations_is_named_with_the_classes_that_leave_it_out(catalog, tmp_path):
    ann = _export_with_supercategory(tmp_path)
    table = {"type": "coco", "ann_file": ann, "img_dir": str(tmp_path / "i")}
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "dataset", table, "data.train")
    assert err.value.key == "data.train.classes"
    assert "id 0 'pieces'" in str(err.value) and 'classes = ["black-king", "white-king"]' in str(err.value)
    # the suggested line is the fix; a val split may lack a class
    validate_component(catalog, "dataset", {**table, "classes": ["black-king", "white-king"]}, "data.train")
    validate_component(catalog, "dataset", table, "data.val")


def test_a_subset_lacking_some_classes_passes_config_check(catalog, tmp_path):
    """Like coco128 (9 of COCO's 80 classes unannotated): not a supercategory,
    so config check accepts it (coco check lists it as a warning)."""
    write_image(str(tmp_path / "i" / "a.jpg"), 16, 16)
    ann = write_coco(str(tmp_path / "sub.json"), [{"id": 1, "file_name": "a.jpg", "width": 16, "height": 16}],
                     [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                     [{"id": 1, "name": "cat", "supercategory": "animal"},
                      {"id": 2, "name": "dog", "supercategory": "animal"}])
    validate_component(catalog, "dataset", {"type": "coco", "ann_file": ann, "img_dir": str(tmp_path / "i")},
                       "data.train")


@pytest.mark.slow
def test_coco_check_and_config_check_name_the_empty_category(tmp_path):
    ann = _export_with_supercategory(tmp_path)
    proc = run_detcore("coco", "check", ann, tmp_path / "i")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a warning: the file is valid
    assert "empty_category: 1" in proc.stdout
    assert "category id 0 'pieces': no annotations" in proc.stdout
    assert 'classes = ["black-king", "white-king"]' in proc.stdout

    run = tmp_path / "run.toml"
    run.write_text(
        '[model]\ntype = "fcos"\nnum_classes = 3\nbackbone = { type = "tiny" }\n'
        f'[data.train]\ntype = "coco"\nann_file = "{ann}"\nimg_dir = "{tmp_path / "i"}"\n'
    )
    proc = run_detcore("config", "check", run, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "key 'data.train.classes'" in proc.stderr and "'pieces'" in proc.stderr
    assert 'classes = ["black-king", "white-king"]' in proc.stderr and "Traceback" not in proc.stderr
