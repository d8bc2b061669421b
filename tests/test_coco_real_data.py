"""The real detection sets in ../shared/data (BCCD: Pascal VOC XML; coco128:
YOLO txt) convert to COCO, pass `detcore coco check` and load with the coco
dataset. The files are read in place, never copied into the project."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from detcore.testing import run_detcore

pytest.importorskip("pycocotools")

from detcore_coco.dataset import CocoDataset  # noqa: E402

# The conversions run the real `detcore coco` command in a subprocess.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DETCORE_SHARED_DATA", REPO.parent / "shared" / "data"))
BCCD = DATA / "bccd"
COCO128 = DATA / "coco128"

needs_bccd = pytest.mark.skipif(not (BCCD / "Annotations").is_dir(), reason=f"BCCD not found at {BCCD} (set DETCORE_SHARED_DATA)")
needs_coco128 = pytest.mark.skipif(not (COCO128 / "labels").is_dir(), reason=f"coco128 not found at {COCO128} (set DETCORE_SHARED_DATA)")


@pytest.fixture(scope="module")
def bccd(tmp_path_factory):
    out = tmp_path_factory.mktemp("bccd") / "bccd_train.json"
    proc = run_detcore("coco", "convert", "voc", str(BCCD / "Annotations"), "--images", str(BCCD / "JPEGImages"),
                       "--ids", str(BCCD / "ImageSets" / "Main" / "trainval.txt"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


@pytest.fixture(scope="module")
def coco128(tmp_path_factory):
    out = tmp_path_factory.mktemp("coco128") / "coco128.json"
    proc = run_detcore("coco", "convert", "yolo", str(COCO128 / "labels" / "train2017"), "--images", str(COCO128 / "images" / "train2017"),
                       "--names", str(COCO128 / "coco128.yaml"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


@needs_bccd
def test_bccd_all_images_convert_and_zero_area_boxes_are_reported(tmp_path):
    out = tmp_path / "bccd.json"
    proc = run_detcore("coco", "convert", "voc", str(BCCD / "Annotations"), "--images", str(BCCD / "JPEGImages"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    # 4,888 boxes in the XML files, of which two have zero area.
    assert "364 images, 4886 annotations" in proc.stdout
    assert "dropped 2 zero-area box(es)" in proc.stdout and "BloodImage_00338.xml" in proc.stdout
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["categories"]] == ["Platelets", "RBC", "WBC"]
    counts = {c["name"]: sum(1 for a in data["annotations"] if a["category_id"] == c["id"]) for c in data["categories"]}
    assert counts == {"RBC": 4153, "WBC": 372, "Platelets": 361}


@needs_bccd
def test_bccd_split_passes_check_and_loads(bccd):
    out, _ = bccd
    proc = run_detcore("coco", "check", str(out), str(BCCD / "JPEGImages"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("OK")
    ds = CocoDataset(str(out), str(BCCD / "JPEGImages"), classes=["RBC", "WBC", "Platelets"])
    ids = [line.strip() for line in (BCCD / "ImageSets" / "Main" / "trainval.txt").read_text().split()]
    assert len(ds) == len(ids)
    image, t = ds[0]
    assert image.shape == (3, 480, 640) and len(t["boxes"]) > 0 and t["labels"].max() <= 2


@needs_coco128
def test_coco128_converts_with_yaml_names_passes_check_and_loads(coco128):
    out, stdout = coco128
    assert "128 images, 929 annotations" in stdout
    data = json.loads(out.read_text())
    assert len(data["categories"]) == 80 and data["categories"][0] == {"id": 1, "name": "person"}
    proc = run_detcore("coco", "check", str(out), str(COCO128 / "images" / "train2017"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ds = CocoDataset(str(out), str(COCO128 / "images" / "train2017"), classes=["person", "car", "dog"], filter_empty=True)
    assert ds.class_names == ["person", "car", "dog"] and ds.cat_ids == [1, 3, 17]
    image, t = ds[0]
    assert image.dtype.is_floating_point is False and set(t["labels"].tolist()) <= {0, 1, 2}


TRAIN_RUN = """
[model]
type = "fcos"
num_classes = {num_classes}
backbone = {{ type = "tiny", width = 8 }}
neck = {{ type = "fpn", out_channels = 32, extra = "p6p7" }}

[data]
batch_size = 2
workers = 0

[data.train]
type = "coco"
ann_file = "{ann}"
img_dir = "{img_dir}"
transforms = [{{ type = "resize", size = 128, max_size = 160 }}]

[optimizer]
lr = 0.001

[train]
max_iters = 3
val_interval = 100

[checkpoint]
interval = 100
"""


def _can_train() -> str | None:
    try:
        import detcore.engine.train  # noqa: F401
    except ImportError:
        return "detcore train is not available in this build"
    from detcore.catalog import Catalog
    from detcore.plugins import get_plugin_manager

    catalog = Catalog.from_plugin_manager(get_plugin_manager())
    if "fcos" not in catalog.names("detector"):
        return "no 'fcos' detector installed"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("which", ["bccd", "coco128"])
def test_train_a_few_iterations_on_real_data(which, tmp_path, request):
    reason = _can_train()
    if reason:
        pytest.skip(reason)
    if which == "bccd":
        if not (BCCD / "Annotations").is_dir():
            pytest.skip(f"BCCD not found at {BCCD}")
        out, _ = request.getfixturevalue("bccd")
        img_dir, n = BCCD / "JPEGImages", 3
    else:
        if not (COCO128 / "labels").is_dir():
            pytest.skip(f"coco128 not found at {COCO128}")
        out, _ = request.getfixturevalue("coco128")
        img_dir, n = COCO128 / "images" / "train2017", 80
    run = tmp_path / "run.toml"
    run.write_text(TRAIN_RUN.format(num_classes=n, ann=out, img_dir=img_dir))
    proc = run_detcore("train", run, "--work-dir", tmp_path / "work", "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
