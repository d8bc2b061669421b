"""The ``voc`` dataset on the real BCCD folder and on small written folders,
and its run-file checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from detcore_voc.annotations import VOC_CLASSES, VocFormatError, default_classes, read_xml
from detcore_voc.dataset import VocDataset
from torchvision import tv_tensors

from detcore.catalog import Catalog
from detcore.errors import RunFileError
from detcore.plugins import get_plugin_manager
from detcore.runfile.components import validate_component

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

BCCD = Path(__file__).resolve().parents[4] / "shared" / "data" / "bccd"
needs_bccd = pytest.mark.skipif(not BCCD.is_dir(), reason="shared BCCD data not present")


@needs_bccd
def test_bccd_items_follow_detcores_dataset_format():
    with pytest.warns(UserWarning, match="dropped 2 box"):
        ds = VocDataset(str(BCCD), "trainval")  # both single-point boxes are in trainval
    assert ds.class_names == ["Platelets", "RBC", "WBC"]
    assert len(ds) == 292 and ds.aspect_ratios[0] == pytest.approx(640 / 480)
    image, target = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8
    assert tuple(image.shape) == (3, 480, 640)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert tuple(target["boxes"].canvas_size) == (480, 640)
    assert target["labels"].dtype == torch.int64 and target["image_id"] == 0
    assert target["orig_size"] == (480, 640)
    # BloodImage_00000 is the first trainval image; its XML gives 1-based
    # inclusive pixels, the item continuous 0-based xyxy.
    record = read_xml(BCCD / "Annotations" / "BloodImage_00000.xml")
    first = record.objects[0]
    assert ds.records[0].image_id == "BloodImage_00000"
    raw = read_xml_box(BCCD / "Annotations" / "BloodImage_00000.xml")
    assert first.box == (raw[0] - 1, raw[1] - 1, raw[2], raw[3])
    assert target["boxes"][0].tolist() == list(first.box)


def read_xml_box(path: Path) -> list[float]:
    import xml.etree.ElementTree as ET

    bnd = ET.parse(path).getroot().find("object/bndbox")
    return [float(bnd.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]


@needs_bccd
def test_bccd_box_counts_over_all_splits():
    counts = {}
    for split in ("trainval", "test"):
        with pytest.warns(UserWarning) if split == "trainval" else _nothing():
            ds = VocDataset(str(BCCD), split)
        for _, labels, _ in ds.voc_ground_truth().values():
            for label in labels.tolist():
                counts[ds.class_names[label]] = counts.get(ds.class_names[label], 0) + 1
    # The data's README: RBC 4,155, WBC 372, Platelets 361, two of the RBC
    # boxes being single points (dropped).
    assert counts == {"RBC": 4155 - 2, "WBC": 372, "Platelets": 361}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _write(root: Path, stem: str, body: str, size=(32, 24)) -> None:
    from torchvision.io import write_jpeg

    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    w, h = size
    (root / "Annotations" / f"{stem}.xml").write_text(
        f"<annotation><filename>{stem}.jpg</filename><size><width>{w}</width>"
        f"<height>{h}</height></size>{body}</annotation>"
    )
    write_jpeg(torch.zeros(3, h, w, dtype=torch.uint8), str(root / "JPEGImages" / f"{stem}.jpg"))


def _obj(name, box, difficult=0):
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult><part><name>hand</name></part>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def test_difficult_objects_and_default_classes(tmp_path):
    _write(tmp_path, "a", _obj("dog", (1, 1, 10, 10)) + _obj("cat", (5, 5, 20, 20), difficult=1))
    _write(tmp_path, "b", "")
    (tmp_path / "ImageSets/Main/train.txt").write_text("a\nb\n")
    # All names are VOC classes (the <part> name is not a class): VOC's 20, in order.
    assert default_classes(tmp_path) == list(VOC_CLASSES)
    ds = VocDataset(str(tmp_path), "train")
    _, target = ds[0]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog")]  # difficult cat left out
    boxes, labels, difficult = ds.voc_ground_truth()[0]
    assert labels.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert difficult.tolist() == [False, True]
    kept = VocDataset(str(tmp_path), "train", keep_difficult=True)
    assert len(kept[0][1]["labels"]) == 2 and not kept.voc_ground_truth()[0][2].any()
    assert len(VocDataset(str(tmp_path), "train", filter_empty=True)) == 1
    # Other names: the names found, sorted; classes given: others are ignored.
    _write(tmp_path, "c", _obj("zebra", (1, 1, 4, 4)))
    assert default_classes(tmp_path) == ["cat", "dog", "zebra"]
    only_dogs = VocDataset(str(tmp_path), "train", classes=["dog"])
    assert only_dogs.voc_ground_truth()[0][1].tolist() == [0]


def test_transforms_from_the_catalog_apply_to_voc_items(tmp_path):
    _write(tmp_path, "a", _obj("dog", (1, 1, 16, 12)), size=(32, 24))
    (tmp_path / "ImageSets/Main/train.txt").write_text("a\n")
    catalog = Catalog.from_plugin_manager(get_plugin_manager())
    table = {"type": "voc", "root": str(tmp_path), "split": "train",
             "transforms": [{"type": "resize", "size": 12}]}  # fmt: skip
    validate_component(catalog, "dataset", table, "data.train")
    ds = catalog.build("dataset", table, path="data.train")
    image, target = ds[0]
    assert tuple(image.shape[-2:]) == (12, 16)
    assert target["boxes"].tolist() == [[0.0, 0.0, 8.0, 6.0]] and target["orig_size"] == (24, 32)


def test_bad_xml_is_reported_with_the_file(tmp_path):
    (tmp_path / "x.xml").write_text("<annotation><size><width>3</width></size>")
    with pytest.raises(VocFormatError, match="x.xml: not valid XML"):
        read_xml(tmp_path / "x.xml")
    (tmp_path / "y.xml").write_text("<annotation><size><width>3</width></size></annotation>")
    with pytest.raises(VocFormatError, match="y.xml: <size> has no <height>"):
        read_xml(tmp_path / "y.xml")


@pytest.fixture()
def catalog():
    return Catalog.from_plugin_manager(get_plugin_manager())


def test_run_file_checks(catalog, tmp_path):
    component = catalog.get("dataset", "voc")
    assert (component.plugin, component.distribution) == ("voc", "detcore-voc")
    _write(tmp_path, "a", _obj("dog", (1, 1, 10, 10)))
    (tmp_path / "ImageSets/Main/train.txt").write_text("a\n")
    validate_component(catalog, "dataset", {"type": "voc", "root": str(tmp_path), "split": "train"}, "data.train")
    cases = [
        ({"root": str(tmp_path / "nope")}, "data.train.root", "not found"),
        ({"root": str(tmp_path), "split": "trian"}, "data.train.split", "did you mean 'train'"),
        ({"root": str(tmp_path), "split": 3}, "data.train.split", "expected a string"),
        ({"root": str(tmp_path), "split": "train", "classes": ["a", "a"]}, "data.train.classes", "repeats"),
    ]
    for args, key, needle in cases:
        with pytest.raises(RunFileError) as info:
            validate_component(catalog, "dataset", {"type": "voc", **args}, "data.train")
        assert info.value.key == key and needle in str(info.value)
    with pytest.raises(RunFileError, match="iou_thr must be in"):
        validate_component(catalog, "metric", {"type": "voc", "iou_thr": 1.5}, "metrics[0]")
    metric = catalog.build("metric", {"type": "voc", "iou_thr": 0.6})
    assert metric.iou_thr == 0.6
    os.stat(tmp_path)  # the folder is untouched by checks
