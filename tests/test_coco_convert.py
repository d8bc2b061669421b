"""Converters to COCO (VIA, VOC, YOLO), `detcore coco check` and `make-shapes`,
on small files the tests write."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from detcore.testing import run_detcore

pytest.importorskip("pycocotools")

from detcore_coco.check import check_coco  # noqa: E402
from detcore_coco.convert import ConvertError, read_names, via_to_coco, voc_to_coco, yolo_to_coco  # noqa: E402
from detcore_coco.dataset import CocoDataset  # noqa: E402
from detcore_coco.shapes import make_shapes  # noqa: E402
from detcore_coco.testing import write_coco, write_image  # noqa: E402

# ---------------------------------------------------------------------------
# VIA (the balloon example's format)
# ---------------------------------------------------------------------------


def test_via_polygons_to_coco(tmp_path):
    write_image(str(tmp_path / "img" / "b1.jpg"), 100, 80)
    write_image(str(tmp_path / "img" / "b2.jpg"), 60, 60)
    via = {
        "b1.jpg12345": {
            "filename": "b1.jpg", "size": 12345,
            "regions": {
                "0": {"shape_attributes": {"name": "polygon", "all_points_x": [10, 50, 50, 10], "all_points_y": [20, 20, 60, 60]},
                      "region_attributes": {}},
                "1": {"shape_attributes": {"name": "rect", "x": 60, "y": 5, "width": 30, "height": 10}, "region_attributes": {}},
            },
        },
        # VIA 2 writes regions as a list; a degenerate polygon (a line) is dropped and reported.
        "b2.jpg999": {"filename": "b2.jpg", "regions": [
            {"shape_attributes": {"name": "polygon", "all_points_x": [5, 25, 15], "all_points_y": [5, 5, 5]}, "region_attributes": {}},
        ]},
    }
    (tmp_path / "via.json").write_text(json.dumps(via))
    data, report = via_to_coco(str(tmp_path / "via.json"), str(tmp_path / "img"), category="balloon")
    assert data["categories"] == [{"id": 1, "name": "balloon"}]
    assert [im["file_name"] for im in data["images"]] == ["b1.jpg", "b2.jpg"]
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (100, 80)
    poly, rect = data["annotations"]
    assert poly["bbox"] == [10, 20, 40, 40] and poly["area"] == 1600
    # vertices at pixel centres, as MMDetection's balloon converter writes them
    assert poly["segmentation"] == [[10.5, 20.5, 50.5, 20.5, 50.5, 60.5, 10.5, 60.5]]
    assert rect["bbox"] == [60, 5, 30, 10]
    assert len(report.zero_area) == 1 and "b2.jpg region 0" in report.zero_area[0]
    # The converted file loads and yields masks.
    out = write_coco(str(tmp_path / "coco.json"), data["images"], data["annotations"], data["categories"])
    ds = CocoDataset(out, str(tmp_path / "img"), with_masks=True, filter_empty=True)
    _, t = ds[0]
    assert t["masks"][0].sum().item() == pytest.approx(1600, rel=0.1)


def test_via_category_from_region_attribute(tmp_path):
    write_image(str(tmp_path / "a.jpg"), 50, 50)
    via = {"a": {"filename": "a.jpg", "regions": [
        {"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 9, "height": 9}, "region_attributes": {"kind": "cat"}},
        {"shape_attributes": {"name": "rect", "x": 20, "y": 20, "width": 9, "height": 9}, "region_attributes": {"kind": "dog"}},
        {"shape_attributes": {"name": "point", "cx": 3, "cy": 3}, "region_attributes": {"kind": "dog"}},
    ]}}
    (tmp_path / "via.json").write_text(json.dumps({"_via_img_metadata": via}))
    data, report = via_to_coco(str(tmp_path / "via.json"), str(tmp_path), attribute="kind")
    assert [c["name"] for c in data["categories"]] == ["cat", "dog"]
    assert [a["category_id"] for a in data["annotations"]] == [1, 2]
    assert "unsupported shape 'point'" in report.problems[0]


# ---------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------

VOC_XML = """<annotation><filename>{fn}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
VOC_OBJ = "<object><name>{name}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"


def write_voc(root, stem, fn, w, h, objects):
    objs = "".join(VOC_OBJ.format(name=n, d=d, x1=a, y1=b, x2=c, y2=e) for n, d, a, b, c, e in objects)
    os.makedirs(root / "Annotations", exist_ok=True)
    (root / "Annotations" / f"{stem}.xml").write_text(VOC_XML.format(fn=fn, w=w, h=h, objects=objs))


def test_voc_to_coco(tmp_path):
    write_image(str(tmp_path / "JPEGImages" / "img1.jpg"), 64, 48)
    write_image(str(tmp_path / "JPEGImages" / "img2.jpg"), 32, 32)
    write_voc(tmp_path, "img1", "img1.jpg", 64, 48, [("dog", 0, 1, 1, 20, 10), ("cat", 1, 30, 5, 64, 48), ("dog", 0, 7, 7, 7, 9)])
    write_voc(tmp_path, "img2", "img2", 32, 32, [("cat", 0, 2, 2, 10, 10)])  # filename without extension
    (tmp_path / "train.txt").write_text("img1\n")
    data, report = voc_to_coco(str(tmp_path / "Annotations"), str(tmp_path / "JPEGImages"))
    assert [c["name"] for c in data["categories"]] == ["cat", "dog"]
    assert [im["file_name"] for im in data["images"]] == ["img1.jpg", "img2.jpg"]
    dog, cat, cat2 = data["annotations"]
    # 1-based inclusive VOC pixels -> [xmin - 1, ymin - 1, xmax, ymax]
    assert dog["bbox"] == [0, 0, 20, 10] and dog["category_id"] == 2 and dog["iscrowd"] == 0
    assert cat["bbox"] == [29, 4, 35, 44] and cat["iscrowd"] == 1  # difficult: an ignore region
    assert report.zero_area == ["img1.xml object 2: dog [7, 7, 7, 9]"]
    # An id list restricts the images; --names fixes the order and reports others.
    data, report = voc_to_coco(str(tmp_path / "Annotations"), str(tmp_path / "JPEGImages"), names=["dog"],
                               ids_file=str(tmp_path / "train.txt"))
    assert len(data["images"]) == 1 and data["categories"] == [{"id": 1, "name": "dog"}]
    assert "class 'cat' is not in the names list" in report.problems[0]


def test_voc_bad_input(tmp_path):
    with pytest.raises(ConvertError, match="VOC annotation directory not found"):
        voc_to_coco(str(tmp_path / "nope"), str(tmp_path))
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_text("<annotation><filename>")
    with pytest.raises(ConvertError, match=r"x\.xml' is not valid XML"):
        voc_to_coco(str(tmp_path / "Annotations"), str(tmp_path))


# ---------------------------------------------------------------------------
# YOLO
# ---------------------------------------------------------------------------


def test_yolo_to_coco_with_txt_and_yaml_names(tmp_path):
    write_image(str(tmp_path / "images" / "a.jpg"), 100, 50)
    write_image(str(tmp_path / "images" / "b.png"), 40, 40)  # no label file: an image without objects
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text(
        "1 0.5 0.5 0.2 0.4\n"          # car: centre (50, 25), 20 x 20
        "0 0.1 0.1 0.1 0.2\n"          # person: [5, 0, 15, 10]
        "0 0.9 0.5 0.0 0.5\n"          # zero width: dropped
        "7 0.5 0.5 0.1 0.1\n"          # class outside the names
        "0 0.1 0.1 0.5 0.5 0.1 0.5\n"  # a polygon
    )
    (tmp_path / "names.yaml").write_text("path: x\nnames:\n  0: person\n  1: car\n")
    (tmp_path / "names.txt").write_text("person\ncar\n")
    assert read_names(str(tmp_path / "names.yaml")) == read_names(str(tmp_path / "names.txt")) == ["person", "car"]
    (tmp_path / "list.yaml").write_text("names: ['person', 'car']\n")
    assert read_names(str(tmp_path / "list.yaml")) == ["person", "car"]
    data, report = yolo_to_coco(str(labels), str(tmp_path / "images"), names=["person", "car"])
    assert [c["name"] for c in data["categories"]] == ["person", "car"]
    assert [im["file_name"] for im in data["images"]] == ["a.jpg", "b.png"]
    car, person, poly = data["annotations"]
    assert car["bbox"] == [40, 15, 20, 20] and car["category_id"] == 2
    assert person["bbox"] == [5, 0, 10, 10] and person["category_id"] == 1
    assert poly["segmentation"] == [[10.0, 5.0, 50.0, 25.0, 10.0, 25.0]] and poly["bbox"] == [10, 5, 40, 20]
    assert len(report.zero_area) == 1 and "a.txt line 3" in report.zero_area[0]
    assert any("a.txt line 4: class 7 is outside the 2 names" in p for p in report.problems)
    with pytest.raises(ConvertError, match="--names"):
        yolo_to_coco(str(labels), str(tmp_path / "images"), names=[])


@pytest.mark.parametrize(
    "text",
    [
        "names: {0: cat, 1: dog}\n",                         # flow mapping (Ultralytics writes these)
        "path: ../x  # comment\nnames: {1: dog, 0: 'cat'}\nnc: 2\n",  # keys out of order, quoted
        "names:\n  0: cat\n  1: dog\n",                      # block mapping
        "names: [cat, dog]\n",                               # flow list
        "names:\n  - cat\n  - dog\n",                        # block list
        "names:\n- cat  # a comment\n- dog\n",                # block list at column 0
    ],
)
def test_read_names_yaml_styles(tmp_path, text):
    (tmp_path / "data.yaml").write_text(text)
    assert read_names(str(tmp_path / "data.yaml")) == ["cat", "dog"]


@pytest.mark.parametrize(
    "text,match",
    [
        ("names: {}\n", "no 'names:'"),
        ("nc: 2\n", "no 'names:'"),
        ("names: {0: cat, 2: dog}\n", r"indices 0, 1"),
        ("names: [cat, dog\n", "cannot parse YAML"),
    ],
)
def test_read_names_bad_yaml_is_a_clear_error(tmp_path, text, match):
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(ConvertError, match=match) as info:
        read_names(str(tmp_path / "data.yaml"))
    assert "data.yaml" in str(info.value)


# ---------------------------------------------------------------------------
# detcore coco check
# ---------------------------------------------------------------------------


def test_check_reports_every_problem_with_counts(tmp_path):
    img = tmp_path / "img"
    write_image(str(img / "ok.jpg"), 40, 30)
    write_image(str(img / "small.jpg"), 20, 20)
    (img / "broken.jpg").write_bytes(b"not an image")
    images = [
        {"id": 1, "file_name": "ok.jpg", "width": 40, "height": 30},
        {"id": 2, "file_name": "small.jpg", "width": 40, "height": 30},   # size mismatch
        {"id": 3, "file_name": "missing.jpg", "width": 10, "height": 10},  # missing
        {"id": 4, "file_name": "broken.jpg", "width": 10, "height": 10},   # unreadable
        {"id": 1, "file_name": "ok.jpg", "width": 40, "height": 30},      # duplicate image id
    ]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [35, 0, 10, 10]},  # outside
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 4]},     # zero area
        {"id": 4, "image_id": 1, "category_id": 9, "bbox": [1, 1, 2, 2]},     # unknown category
        {"id": 5, "image_id": 77, "category_id": 1, "bbox": [1, 1, 2, 2]},    # unknown image
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},     # duplicate annotation id
    ]
    ann = write_coco(str(tmp_path / "a.json"), images, anns, [{"id": 1, "name": "x"}, {"id": 1, "name": "y"}])
    res = check_coco(ann, str(img))
    counts = {k: len(v) for k, v in res.problems.items() if v}
    assert counts == {
        "duplicate_image_id": 1, "size_mismatch": 1, "missing_image": 1, "unreadable_image": 1,
        "box_outside_image": 1, "zero_area_box": 1, "unknown_category": 1, "unknown_image": 1,
        "duplicate_annotation_id": 1, "duplicate_category_id": 1,
    }
    assert "broken.jpg" in res.problems["unreadable_image"][0] and "missing.jpg" in res.problems["missing_image"][0]
    assert "annotation id 2" in res.problems["box_outside_image"][0]
    lines = res.lines(examples=1)
    assert "zero_area_box: 1 (box with zero (or negative) width or height)" in lines


@pytest.mark.slow
def test_check_command_exit_status(tmp_path):
    write_image(str(tmp_path / "img" / "a.jpg"), 20, 20)
    images = [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 20}]
    bad = write_coco(str(tmp_path / "bad.json"), images, [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 4]},
                                                          {"image_id": 1, "category_id": 2, "bbox": [5, 5, 4, 4]}],
                     [{"id": 1, "name": "x"}])
    proc = run_detcore("coco", "check", bad, str(tmp_path / "img"))
    assert proc.returncode == 1
    assert "2 problem(s)" in proc.stdout and "zero_area_box: 1" in proc.stdout and "unknown_category: 1" in proc.stdout
    good = write_coco(str(tmp_path / "good.json"), images, [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 4, 4]}],
                      [{"id": 1, "name": "x"}])
    proc = run_detcore("coco", "check", good, str(tmp_path / "img"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK")


@pytest.mark.slow
def test_cli_convert_then_check(tmp_path):
    write_image(str(tmp_path / "images" / "a.jpg"), 64, 48)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n1 0.2 0.2 0.0 0.1\n")
    (tmp_path / "names.txt").write_text("person\ncar\n")
    proc = run_detcore("coco", "convert", "yolo", "labels", "--images", "images", "--out", "out/train.json", "--names", "names.txt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 images, 1 annotations" in proc.stdout and "dropped 1 zero-area box(es)" in proc.stdout
    proc = run_detcore("coco", "check", "out/train.json", "images", cwd=tmp_path)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
    proc = run_detcore("coco", "convert", "yolo", "labels", "--images", "images", "--out", "x.json", cwd=tmp_path)
    assert proc.returncode == 1 and "--names" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_detcore("coco", "check", "nope.json", "images", cwd=tmp_path)
    assert proc.returncode == 2 and "not found: 'nope.json'" in proc.stderr


# ---------------------------------------------------------------------------
# make-shapes
# ---------------------------------------------------------------------------


def _digest(root) -> str:
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            h.update(open(os.path.join(dirpath, f), "rb").read())
    return h.hexdigest()


def test_make_shapes_is_deterministic_and_valid(tmp_path):
    a = make_shapes(str(tmp_path / "a"), train=6, val=3, size=64, seed=5)
    make_shapes(str(tmp_path / "b"), train=6, val=3, size=64, seed=5)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    make_shapes(str(tmp_path / "c"), train=6, val=3, size=64, seed=6)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    for split in ("train", "val"):
        assert check_coco(str(tmp_path / "a" / f"{split}.json"), str(tmp_path / "a" / split)).ok
    train = a["train"]
    assert [c["name"] for c in train["categories"]] == ["rectangle", "ellipse", "triangle"]
    per_image = [sum(1 for x in train["annotations"] if x["image_id"] == im["id"]) for im in train["images"]]
    assert all(1 <= n <= 4 for n in per_image)
    assert all(len(x["segmentation"][0]) >= 6 for x in train["annotations"])
    ds = CocoDataset(str(tmp_path / "a" / "train.json"), str(tmp_path / "a" / "train"), with_masks=True)
    image, t = ds[0]
    assert image.shape == (3, 64, 64) and len(t["boxes"]) == len(t["masks"]) == per_image[0]


@pytest.mark.slow
def test_make_shapes_command(tmp_path):
    proc = run_detcore("coco", "make-shapes", "data/shapes", "--train", "4", "--val", "2", "--size", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "data" / "shapes")) == ["train", "train.json", "val", "val.json"]
    assert len(os.listdir(tmp_path / "data" / "shapes" / "train")) == 4


# ---------------------------------------------------------------------------
# unreadable JSON and CLI arguments
# ---------------------------------------------------------------------------


def test_check_non_utf8_file_gives_a_clean_error(tmp_path):
    from detcore_coco.annfile import AnnotationError

    (tmp_path / "img").mkdir()
    bad = tmp_path / "latin1.json"
    bad.write_bytes('{"images": [], "categories": [{"id": 1, "name": "caf\u00e9"}]}'.encode("latin-1"))
    with pytest.raises(AnnotationError, match="latin1.json' is not UTF-8 text"):
        check_coco(str(bad), str(tmp_path / "img"))
    with pytest.raises(ConvertError, match="VIA file '.*latin1.json' is not UTF-8 text"):
        via_to_coco(str(bad), str(tmp_path / "img"))


def test_check_examples_must_not_be_negative(capsys):
    import argparse

    from detcore_coco import cli

    parser = argparse.ArgumentParser()
    cli.configure(parser)
    assert parser.parse_args(["check", "a.json", "img", "--examples", "0"]).examples == 0
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["check", "a.json", "img", "--examples", "-1"])
    assert exc.value.code == 2
    assert "must be 0 or more, got -1" in capsys.readouterr().err


def test_annotation_cache_keeps_train_and_val(tmp_path, monkeypatch):
    from detcore_coco import annfile

    monkeypatch.setattr(annfile, "_CACHE", {})
    paths = [write_coco(str(tmp_path / f"{n}.json"), [], [], [{"id": 1, "name": "x"}]) for n in ("a", "b", "c", "d")]
    reads = []
    real = annfile.read_json
    monkeypatch.setattr(annfile, "read_json", lambda p, what="annotation file": reads.append(p) or real(p, what))
    for _ in range(2):  # config check (train, val), then the datasets (train, val)
        annfile.load_coco_json(paths[0])
        annfile.load_coco_json(paths[1])
    assert reads == paths[:2]
    annfile.load_coco_json(paths[2])
    annfile.load_coco_json(paths[3])  # evicts the oldest (a)
    assert len(annfile._CACHE) == 3
    annfile.load_coco_json(paths[1])
    annfile.load_coco_json(paths[0])
    assert reads == [*paths, paths[0]]
