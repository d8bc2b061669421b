"""The coco metric gives exactly what pycocotools gives on the same predictions."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from detcore_coco.dataset import CocoDataset  # noqa: E402
from detcore_coco.metric import CocoMetric, stat_keys  # noqa: E402
from detcore_coco.shapes import make_shapes  # noqa: E402
from pycocotools import mask as mask_util  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from detcore.catalog import Catalog  # noqa: E402
from detcore.errors import DetcoreError, RunFileError  # noqa: E402
from detcore.plugins import get_plugin_manager  # noqa: E402
from detcore.runfile.components import validate_component  # noqa: E402

NAMES = ["mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l", "AR@1", "AR@10", "AR@100", "AR_s@100", "AR_m@100", "AR_l@100"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(str(root), train=0, val=16, size=64, seed=3)
    return str(root / "val.json"), str(root / "val")


def noisy_predictions(ds: CocoDataset, seed: int = 0) -> list[dict]:
    """Per image: each GT object found with a jittered box and a shifted mask
    (some with the wrong label), plus clutter; random scores."""
    rng = np.random.default_rng(seed)
    preds = []
    for idx in range(len(ds)):
        r = ds.records[idx]
        h, w = r["height"], r["width"]
        gt = r["boxes"]
        k = len(gt)
        boxes = gt + rng.normal(0, 2.0, size=gt.shape)
        labels = np.where(rng.random(k) < 0.2, rng.integers(0, 3, size=k), r["labels"])
        masks = [np.roll(ds.coco.annToMask(ds.coco.anns[a]), int(rng.integers(-2, 3)), axis=1) for a in r["ann_ids"]]
        for _ in range(3):  # clutter
            x, y = rng.uniform(0, w - 12), rng.uniform(0, h - 12)
            bw, bh = rng.uniform(4, 12, size=2)
            boxes = np.concatenate([boxes, [[x, y, x + bw, y + bh]]])
            labels = np.append(labels, rng.integers(0, 3))
            m = np.zeros((h, w), dtype=np.uint8)
            m[int(y): int(y + bh), int(x): int(x + bw)] = 1
            masks.append(m)
        n = len(boxes)
        preds.append({
            "image_id": r["id"],
            "boxes": torch.tensor(np.clip(boxes, 0, [w, h, w, h]), dtype=torch.float32),
            "scores": torch.tensor(rng.uniform(0.05, 1.0, size=n), dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
            # as a model returns them: float [K, 1, H, W] in 0..1
            "masks": torch.tensor(np.stack(masks)[:, None].astype(np.float32) * 0.9),
        })
    return preds


def pycocotools_stats(ann_file: str, preds: list[dict], cat_ids: list[int], iou_type: str, img_ids=None) -> np.ndarray:
    """Direct pycocotools, written independently of detcore_coco."""
    results = []
    for p in preds:
        for box, score, label, mask in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), p["masks"]):
            rec = {"image_id": p["image_id"], "category_id": cat_ids[label], "score": score}
            if iou_type == "bbox":
                rec["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
            else:
                rle = mask_util.encode(np.asfortranarray((mask[0].numpy() > 0.5).astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                rec["segmentation"] = rle
            results.append(rec)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equals_direct_pycocotools(shapes, iou_type):
    ds = CocoDataset(*shapes)
    preds = noisy_predictions(ds)
    got = CocoMetric(iou_types=[iou_type], backend="pycocotools").evaluate(preds, ds)
    want = pycocotools_stats(shapes[0], preds, ds.cat_ids, iou_type)
    assert list(got) == [f"{iou_type}_{n}" for n in NAMES]
    assert [got[k] for k in stat_keys(iou_type)] == [float(v) for v in want]
    assert 0.1 < got[f"{iou_type}_mAP"] < 0.95  # a real, non-trivial number


def test_faster_coco_eval_gives_the_same_numbers(shapes):
    pytest.importorskip("faster_coco_eval")
    ds = CocoDataset(*shapes)
    preds = noisy_predictions(ds, seed=1)
    slow = CocoMetric(iou_types=["bbox", "segm"], backend="pycocotools").evaluate(preds, ds)
    fast = CocoMetric(iou_types=["bbox", "segm"], backend="faster_coco_eval").evaluate(preds, ds)
    assert slow.keys() == fast.keys()
    for k in slow:
        assert fast[k] == pytest.approx(slow[k], abs=1e-9), k
    assert CocoMetric(backend="auto").backend == "faster_coco_eval"


def test_classes_subset_maps_labels_back_to_category_ids(shapes):
    # Labels follow `classes`: 0 = triangle (id 3), 1 = rectangle (id 1).
    ds = CocoDataset(*shapes, classes=["triangle", "rectangle"])
    assert ds.cat_ids == [3, 1]
    preds = [p for p in noisy_predictions(CocoDataset(*shapes), seed=2)]
    remap = {2: 0, 0: 1}  # full-dataset label -> subset label; ellipses dropped
    for p in preds:
        keep = torch.tensor([int(lbl) in remap for lbl in p["labels"]], dtype=torch.bool)
        for k in ("boxes", "scores", "labels", "masks"):
            p[k] = p[k][keep]
        p["labels"] = torch.tensor([remap[int(lbl)] for lbl in p["labels"]], dtype=torch.int64)
    got = CocoMetric(backend="pycocotools").evaluate(preds, ds)
    want = pycocotools_stats(shapes[0], preds, [3, 1], "bbox", img_ids=ds.img_ids)
    assert [got[k] for k in stat_keys("bbox")] == [float(v) for v in want]


def test_classwise_and_results_dump(shapes, tmp_path):
    ds = CocoDataset(*shapes)
    preds = noisy_predictions(ds)
    prefix = tmp_path / "out" / "results"
    got = CocoMetric(iou_types=["bbox", "segm"], classwise=True, outfile_prefix=str(prefix), backend="pycocotools").evaluate(preds, ds)
    for name in ("rectangle", "ellipse", "triangle"):
        assert 0.0 <= got[f"bbox_AP_{name}"] <= 1.0 and f"segm_AP_{name}" in got
    # The per-class APs average to mAP.
    assert np.mean([got[f"bbox_AP_{n}"] for n in ds.class_names]) == pytest.approx(got["bbox_mAP"])
    bbox = json.loads((tmp_path / "out" / "results.bbox.json").read_text())
    segm = json.loads((tmp_path / "out" / "results.segm.json").read_text())
    assert len(bbox) == len(segm) == sum(len(p["scores"]) for p in preds)
    assert set(bbox[0]) == {"image_id", "category_id", "bbox", "score"} and bbox[0]["category_id"] in ds.cat_ids
    # The dump is a valid COCO results file: pycocotools loads it.
    with contextlib.redirect_stdout(io.StringIO()):
        COCO(shapes[0]).loadRes(str(tmp_path / "out" / "results.segm.json"))


def test_no_predictions_wrong_labels_and_missing_masks(shapes):
    ds = CocoDataset(*shapes)
    empty = [{"image_id": i, "boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)} for i in ds.img_ids]
    assert CocoMetric(backend="pycocotools").evaluate(empty, ds)["bbox_mAP"] == 0.0
    bad = [{"image_id": 1, "boxes": torch.ones(1, 4), "scores": torch.ones(1), "labels": torch.tensor([5])}]
    with pytest.raises(DetcoreError, match="predicted label 5 but the dataset has 3 classes"):
        CocoMetric(backend="pycocotools").evaluate(bad, ds)
    no_masks = [{"image_id": 1, "boxes": torch.ones(1, 4), "scores": torch.ones(1), "labels": torch.tensor([0])}]
    with pytest.raises(DetcoreError, match="'segm' but the predictions carry no masks"):
        CocoMetric(iou_types=["segm"], backend="pycocotools").evaluate(no_masks, ds)
    unknown = [{"image_id": 999, "boxes": torch.ones(1, 4), "scores": torch.ones(1), "labels": torch.tensor([0])}]
    with pytest.raises(DetcoreError, match="image_id 999, which is not in the dataset's annotation file"):
        CocoMetric(backend="pycocotools").evaluate(unknown, ds)
    small = [{"image_id": 1, "boxes": torch.ones(1, 4), "scores": torch.ones(1), "labels": torch.tensor([0]),
              "masks": torch.ones(1, 1, 32, 32)}]
    with pytest.raises(DetcoreError, match="masks of image 1 are 32x32 but the image is 64x64"):
        CocoMetric(iou_types=["segm"], backend="pycocotools").evaluate(small, ds)
    with pytest.raises(DetcoreError, match="needs a dataset with a 'coco' attribute"):
        CocoMetric().evaluate(no_masks, torch.utils.data.TensorDataset(torch.zeros(1)))


def test_metric_table_is_checked():
    catalog = Catalog.from_plugin_manager(get_plugin_manager())
    validate_component(catalog, "metric", {"type": "coco", "iou_types": ["bbox", "segm"], "classwise": True}, "metrics[0]")
    with pytest.raises(RunFileError) as err:
        validate_component(catalog, "metric", {"type": "coco", "iou_types": ["box"]}, "metrics[0]")
    assert err.value.key == "metrics[0].iou_types" and "'bbox'" in str(err.value)
    with pytest.raises(RunFileError, match="expected one of 'auto', 'pycocotools', 'faster_coco_eval'"):
        validate_component(catalog, "metric", {"type": "coco", "backend": "fast"}, "metrics[0]")
    with pytest.raises(RunFileError, match="repeats an entry"):
        validate_component(catalog, "metric", {"type": "coco", "iou_types": ["bbox", "bbox"]}, "metrics[0]")


def test_summary_is_pycocotools_own_table(shapes):
    """``summary`` (what ``detcore test`` prints) reproduces the lines
    ``COCOeval.summarize()`` prints, number for number."""
    ds = CocoDataset(*shapes)
    preds = noisy_predictions(ds)
    metric = CocoMetric(iou_types=["bbox", "segm"], classwise=True, backend="pycocotools")
    results = metric.evaluate(preds, ds)
    text = metric.summary(results)
    for iou_type in ("bbox", "segm"):
        printed = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(shapes[0])
            ev = COCOeval(gt, gt.loadRes(to_records(preds, ds.cat_ids, iou_type)), iou_type)
            ev.params.catIds = ds.cat_ids
            ev.evaluate()
            ev.accumulate()
        with contextlib.redirect_stdout(printed):
            ev.summarize()
        block = text.split(f"{iou_type}:\n", 1)[1].splitlines()[:12]
        assert block == printed.getvalue().splitlines()
    assert "bbox_AP_triangle" in text  # classwise APs follow the tables


def to_records(preds, cat_ids, iou_type):
    from detcore_coco.metric import to_coco_results

    return to_coco_results(preds, cat_ids, iou_type)


def test_dump_writes_coco_results_that_evaluate_to_the_same_numbers(shapes, tmp_path):
    ds = CocoDataset(*shapes)
    preds = noisy_predictions(ds, seed=4)
    metric = CocoMetric(iou_types=["bbox", "segm"], backend="pycocotools")
    results = metric.evaluate(preds, ds)
    written = metric.dump(preds, ds, tmp_path / "out" / "preds.json")
    assert [w.split(" ")[0] for w in written] == [str(tmp_path / "out" / "preds.json"),
                                                  str(tmp_path / "out" / "preds.segm.json")]
    for iou_type, name in (("bbox", "preds.json"), ("segm", "preds.segm.json")):
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(shapes[0])
            ev = COCOeval(gt, gt.loadRes(str(tmp_path / "out" / name)), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert [float(v) for v in ev.stats] == pytest.approx([results[k] for k in stat_keys(iou_type)], abs=1e-12)
    # Without masks, only the box file is written.
    boxes_only = [{k: v for k, v in p.items() if k != "masks"} for p in preds]
    assert len(metric.dump(boxes_only, ds, tmp_path / "b.json")) == 1


@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_save_plots_draws_pr_curves_and_confusion_matrix(shapes, tmp_path, monkeypatch, backend):
    pytest.importorskip("matplotlib")
    if backend == "faster_coco_eval":
        pytest.importorskip("faster_coco_eval")
    import detcore

    drawn = {}
    for name in ("save_pr_curves", "save_confusion_matrix"):
        real = getattr(detcore, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            drawn.setdefault(_name, []).append(args)
            return _real(*args, **kwargs)

        monkeypatch.setattr(detcore, name, spy)
    ds = CocoDataset(*shapes)
    preds = noisy_predictions(ds, seed=4)
    metric = CocoMetric(iou_types=["bbox", "segm"], backend=backend)
    assert metric.save_plots(tmp_path / "none") == []  # nothing evaluated yet
    metric.evaluate(preds, ds)
    files = metric.save_plots(tmp_path / "plots")
    assert [f.name for f in files] == ["bbox_PR_curve.png", "segm_PR_curve.png", "confusion_matrix.png"]
    for f in files:
        from PIL import Image

        with Image.open(f) as im:
            assert im.format == "PNG" and im.width > 400
            colours = np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)
            assert len(colours) > 20  # not a blank canvas
    # The PR curves are COCOeval's own precision at IoU 0.5 (direct pycocotools).
    results = [
        {"image_id": p["image_id"], "category_id": ds.cat_ids[lab], "score": s, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
        for p in preds for b, s, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist())
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(shapes[0])
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.catIds = ds.cat_ids
        ev.evaluate()
        ev.accumulate()
    recall, precision, names, _ = drawn["save_pr_curves"][0]
    assert names == ds.class_names and np.allclose(recall, np.linspace(0, 1, 101))
    assert np.allclose(precision, ev.eval["precision"][0, :, :, 0, -1])
    # Every ground-truth box is counted once in its true class's column.
    matrix, names, _ = drawn["save_confusion_matrix"][0]
    per_class = np.bincount(np.concatenate([r["labels"] for r in ds.records]), minlength=3)
    assert (matrix[:, :3].sum(0) == per_class).all()
    assert np.trace(matrix[:3, :3]) > 0.5 * per_class.sum()  # the jittered boxes mostly match
    n_dets = sum(int((p["scores"] >= 0.25).sum()) for p in preds)
    assert matrix[:3, :].sum() == n_dets  # and every detection above the threshold once


def test_no_detections_give_pycocotools_numbers_minus_one_without_ground_truth(shapes):
    """Nothing detected: 0 where the area range has ground truth, -1 where it
    has none (pycocotools' "no ground truth"), not 0 everywhere."""
    ds = CocoDataset(*shapes)
    empty = [{"image_id": i, "boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
              "labels": torch.zeros(0, dtype=torch.int64)} for i in ds.img_ids]
    ours = CocoMetric(backend="pycocotools").evaluate(empty, ds)
    # pycocotools on a result list that detects nothing: one box far from
    # every object (it cannot load an empty list)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(shapes[0])
        miss = [{"image_id": ds.img_ids[0], "category_id": ds.cat_ids[0], "bbox": [0, 0, 1, 1], "score": 0.01}]
        ev = COCOeval(gt, gt.loadRes(miss), "bbox")
        ev.params.catIds = ds.cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [ours[k] for k in stat_keys("bbox")] == [float(v) for v in ev.stats]
    assert -1.0 in ev.stats and 0.0 in ev.stats  # 64 px shapes: small objects only


def test_coco_results_is_one_writer_for_tensors_arrays_and_masks():
    """``detcore.coco_results`` writes the records of the coco metric's dump
    and of ``Prediction.to_coco``: the same records from tensors, numpy arrays
    and half precision; masks as probabilities or 0/1 give one RLE that
    pycocotools decodes back to the mask."""
    import numpy as np
    import torch
    from pycocotools import mask as mask_util

    from detcore import coco_results

    mask = torch.zeros(2, 1, 6, 8)
    mask[0, 0, 1:4, 2:6] = 0.9
    mask[1, 0, 3:5, 0:3] = 0.7
    pred = {
        "image_id": 7,
        "boxes": torch.tensor([[2.0, 1.0, 6.0, 4.0], [0.0, 3.0, 3.0, 5.0]]),
        "scores": torch.tensor([0.75, 0.5]),
        "labels": torch.tensor([1, 0]),
        "masks": mask,
    }
    as_numpy = {k: v.numpy() if hasattr(v, "numpy") else v for k, v in pred.items()}
    as_half = {**pred, "boxes": pred["boxes"].half(), "scores": pred["scores"].half()}
    bbox = coco_results([pred], [10, 20])
    assert bbox == [
        {"image_id": 7, "category_id": 20, "bbox": [2.0, 1.0, 4.0, 3.0], "score": 0.75},
        {"image_id": 7, "category_id": 10, "bbox": [0.0, 3.0, 3.0, 2.0], "score": 0.5},
    ]
    assert coco_results([as_numpy], [10, 20]) == bbox == coco_results([as_half], [10, 20])
    assert coco_results([pred])[0]["category_id"] == 1  # no cat_ids: the 0-based label
    exact = {**pred, "boxes": pred["boxes"].double() / 7, "scores": pred["scores"].double() / 7}
    assert coco_results([exact])[0]["score"] == 0.75 / 7  # float64 is not cut to float32

    segm = coco_results([pred], [10, 20], "segm")
    assert segm == coco_results([{**pred, "masks": mask > 0.5}], [10, 20], "segm")
    for rec, m in zip(segm, mask[:, 0] > 0.5):
        decoded = mask_util.decode({**rec["segmentation"], "counts": rec["segmentation"]["counts"].encode()})
        assert np.array_equal(decoded, m.numpy().astype(np.uint8))
    assert coco_results([{**pred, "masks": None}], None, "segm") == []
    with pytest.raises(ValueError, match="iou_type must be"):
        coco_results([pred], None, "keypoints")
