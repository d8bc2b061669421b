"""The VOC mAP against values worked out by hand (see the comments), and on
the real BCCD annotations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detcore_voc.dataset import VocDataset
from detcore_voc.metric import VocMetric, average_precision, box_iou, class_pr

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

BCCD = Path(__file__).resolve().parents[4] / "shared" / "data" / "bccd"


def test_average_precision_area_and_11_points():
    # recall    1/3 1/3 1/3 2/3  1
    # precision  1  1/2 1/3 1/2 3/5
    rec = np.array([1, 1, 1, 2, 3]) / 3
    prec = np.array([1, 1 / 2, 1 / 3, 2 / 4, 3 / 5])
    # area: precision made non-increasing from the right is 1, .6, .6, .6, .6;
    # 1/3 * 1 + 1/3 * .6 + 1/3 * .6
    assert average_precision(rec, prec, "area") == pytest.approx(1 / 3 + 0.2 + 0.2)
    # 11 points: t = 0 .. 0.3 -> 1 (four points), t = 0.4 .. 1.0 -> 0.6 (seven)
    assert average_precision(rec, prec, "11points") == pytest.approx((4 * 1 + 7 * 0.6) / 11)
    # perfect detector; no detections
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == 1.0
    assert average_precision(np.array([]), np.array([]), "area") == 0.0
    assert average_precision(np.array([]), np.array([]), "11points") == 0.0
    with pytest.raises(ValueError, match="mode"):
        average_precision(rec, prec, "101points")


def test_box_iou_continuous_and_legacy():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    assert box_iou(np.array([1.0, 0, 11, 10]), gt)[0] == pytest.approx(90 / 110)
    assert box_iou(np.array([1.0, 0, 11, 10]), gt, legacy=True)[0] == pytest.approx(110 / 132)
    assert box_iou(np.array([20.0, 20, 30, 30]), gt)[0] == 0.0


# Two images of class 0. Ground truth: image 1: A [0,0,10,10], B
# [20,20,30,30] difficult; image 2: C [0,0,10,10], D [50,50,60,60]: three
# positives. Detections by score:
#   .9 img1 [0,0,10,10]       IoU(A)=1            TP
#   .8 img1 [1,0,11,10]       IoU(A)=90/110, A taken  FP
#   .7 img1 [20,20,30,30]     matches difficult B  ignored
#   .6 img2 [100,100,110,110] no overlap           FP
#   .5 img2 [0,0,10,10]       IoU(C)=1            TP
#   .4 img2 [52,50,62,60]     IoU(D)=80/120        TP
# -> TP FP FP TP TP: the curve of test_average_precision_area_and_11_points.
GT = {
    1: (np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([False, True])),
    2: (np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.array([False, False])),
}
DETS = [
    (1, 0.9, [0, 0, 10, 10]),
    (2, 0.4, [52, 50, 62, 60]),
    (1, 0.8, [1, 0, 11, 10]),
    (2, 0.6, [100, 100, 110, 110]),
    (1, 0.7, [20, 20, 30, 30]),
    (2, 0.5, [0, 0, 10, 10]),
]
AP_AREA = 1 / 3 + 0.2 + 0.2
AP_11 = (4 + 7 * 0.6) / 11


def test_class_pr_matches_the_hand_worked_example():
    recall, precision, npos = class_pr(DETS, GT, iou_thr=0.5)
    assert npos == 3
    np.testing.assert_allclose(recall, np.array([1, 1, 1, 2, 3]) / 3)
    np.testing.assert_allclose(precision, [1, 1 / 2, 1 / 3, 2 / 4, 3 / 5])
    # A stricter threshold turns the .4 detection (IoU 2/3) into a FP.
    recall, precision, _ = class_pr(DETS, GT, iou_thr=0.7)
    np.testing.assert_allclose(recall, np.array([1, 1, 1, 2, 2]) / 3)


def test_legacy_coordinates_change_a_borderline_match():
    gt = {0: (np.array([[0.0, 0.0, 2.0, 2.0]]), np.array([False]))}
    det = [(0, 1.0, [0.0, 0.0, 2.0, 1.0])]
    # continuous: IoU = 2/4 = 0.5, not > 0.5; devkit +1: 6/9 > 0.5
    assert class_pr(det, gt)[0].tolist() == [0.0]
    assert class_pr(det, gt, legacy=True)[0].tolist() == [1.0]


def write_voc(root: Path, records: dict[str, list[tuple[str, list[int], int]]], size=(40, 30)):
    """A VOC folder: one XML (1-based inclusive pixel boxes) and one JPEG per image."""
    from torchvision.io import write_jpeg

    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    w, h = size
    for stem, objects in records.items():
        objs = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
            f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b, d in objects
        )
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><owner><name>someone</name></owner>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"
        )
        write_jpeg(torch.zeros(3, h, w, dtype=torch.uint8), str(root / "JPEGImages" / f"{stem}.jpg"))
    (root / "ImageSets/Main/all.txt").write_text("\n".join(records) + "\n")


def test_voc_metric_on_a_voc_folder(tmp_path):
    # The hand-worked example as VOC files (XML boxes are 1-based, so
    # [0,0,10,10] is written 1 1 10 10), plus class "b" with one positive and
    # no detection (AP 0) and class "c" with no positive (left out of the mean).
    write_voc(
        tmp_path,
        {
            "img1": [("a", [1, 1, 10, 10], 0), ("a", [21, 21, 30, 30], 1)],
            "img2": [("a", [1, 1, 10, 10], 0), ("a", [51, 51, 60, 60], 0), ("b", [5, 5, 9, 9], 0)],
        },
        size=(128, 128),
    )
    ds = VocDataset(str(tmp_path), "all", classes=["a", "b", "c"])
    assert len(ds) == 2
    preds = []
    for image_id in (0, 1):
        mine = [d for d in DETS if d[0] == image_id + 1]
        preds.append(
            {
                "image_id": image_id,
                "boxes": torch.tensor([d[2] for d in mine], dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor([d[1] for d in mine]),
                "labels": torch.zeros(len(mine), dtype=torch.int64),
            }
        )
    preds[0]["boxes"] = torch.cat([preds[0]["boxes"], torch.tensor([[0.0, 0, 5, 5]])])
    preds[0]["scores"] = torch.cat([preds[0]["scores"], torch.tensor([0.3])])
    preds[0]["labels"] = torch.cat([preds[0]["labels"], torch.tensor([2])])
    metric = VocMetric()
    out = metric.evaluate(preds, ds)
    _check_save_plots(metric, tmp_path / "plots", preds)
    assert out["voc_AP/a"] == pytest.approx(AP_AREA)
    assert out["voc_AP/b"] == 0.0
    assert "voc_AP/c" not in out
    assert out["voc_mAP"] == pytest.approx(AP_AREA / 2)
    assert out["voc_mAP_11pt"] == pytest.approx(AP_11 / 2)
    # `detcore test` prints the metric's own per-class table.
    assert VocMetric().summary(out).splitlines() == [
        "VOC AP @ IoU=0.50",
        "  class     AP",
        f"  a         {AP_AREA:.3f}",
        "  b         0.000",
        f"  mAP       {AP_AREA / 2:.3f}",
        f"  mAP 11pt  {AP_11 / 2:.3f}",
    ]


def _check_save_plots(metric, out_dir, preds):
    """save_plots draws the PR curves from the same per-class curves as the
    AP and a confusion matrix counting every non-difficult box once."""
    pytest.importorskip("matplotlib")
    import detcore

    drawn = {}
    real_pr, real_cm = detcore.save_pr_curves, detcore.save_confusion_matrix
    try:
        detcore.save_pr_curves = lambda *a, **k: drawn.setdefault("pr", a) and real_pr(*a, **k)
        detcore.save_confusion_matrix = lambda *a, **k: drawn.setdefault("cm", a) and real_cm(*a, **k)
        files = metric.save_plots(out_dir)
    finally:
        detcore.save_pr_curves, detcore.save_confusion_matrix = real_pr, real_cm
    assert [f.name for f in files] == ["voc_PR_curve.png", "confusion_matrix.png"]
    assert all(f.stat().st_size > 10_000 for f in files)
    points, curves, names, _ = drawn["pr"]
    assert names == ["a", "b", "c"] and curves.shape == (101, 3)
    assert (curves[:, 2] == -1).all()  # no positives: left out
    assert (curves[:, 1] == 0).all()  # one positive, never detected
    # the mean of the monotone precision over the recall points is close to the area AP
    assert curves[:, 0].mean() == pytest.approx(AP_AREA, abs=0.05)
    matrix = drawn["cm"][0]
    assert matrix[:, :3].sum() == 4  # 4 non-difficult boxes (one of the 5 is difficult)
    assert matrix[:3, :].sum() == sum(int((p["scores"] >= 0.25).sum()) for p in preds)


def test_voc_metric_reads_any_dataset_through_its_items():
    # A dataset without VOC records: boxes come from the items, scaled back
    # from the transformed canvas to orig_size; iscrowd boxes are ignored.
    from torchvision import tv_tensors

    class Resized:
        class_names = ["a"]

        def __len__(self):
            return 1

        def __getitem__(self, i):
            boxes = tv_tensors.BoundingBoxes(
                torch.tensor([[0.0, 0, 5, 5], [10, 10, 15, 15]]), format="XYXY", canvas_size=(50, 50)
            )
            target = {
                "boxes": boxes,
                "labels": torch.tensor([0, 0]),
                "image_id": 7,
                "orig_size": (100, 100),
                "iscrowd": torch.tensor([0, 1]),
            }
            return torch.zeros(3, 50, 50), target

    preds = [
        {
            "image_id": 7,
            "boxes": torch.tensor([[20.0, 20, 30, 30], [0, 0, 10, 10]]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([0, 0]),
        }
    ]
    # .9 hits the crowd box (ignored), .8 the positive: AP 1.
    assert VocMetric().evaluate(preds, Resized())["voc_mAP"] == 1.0


@pytest.mark.skipif(not BCCD.is_dir(), reason="shared BCCD data not present")
def test_voc_metric_on_bccd():
    # Predictions: the ground truth of the test split minus every fourth box
    # of each class (score 1 - k/1000), plus one false positive per image at
    # a lower score. Per class the precision is 1 up to the recall r = kept /
    # positives, so AP(area) = r and AP(11 points) = (#{t in 0, .1, .., 1 :
    # t <= r}) / 11.
    ds = VocDataset(str(BCCD), "test")
    gts = ds.voc_ground_truth()
    kept = {c: 0 for c in range(3)}
    total = {c: 0 for c in range(3)}
    preds = []
    seen = {c: 0 for c in range(3)}
    for image_id, (boxes, labels, difficult) in gts.items():
        assert not difficult.any()
        keep = []
        for j, label in enumerate(labels.tolist()):
            total[label] += 1
            if seen[label] % 4 != 3:
                keep.append(j)
                kept[label] += 1
            seen[label] += 1
        k = torch.tensor(keep, dtype=torch.int64)
        b = torch.as_tensor(boxes, dtype=torch.float32)[k]
        preds.append(
            {
                "image_id": image_id,
                "boxes": torch.cat([b, torch.tensor([[600.0, 440, 639, 479]])]),
                "scores": torch.cat([0.99 - 0.0001 * torch.arange(len(k)), torch.tensor([0.01])]),
                "labels": torch.cat([torch.as_tensor(labels)[k], torch.tensor([1])]),
            }
        )
    out = VocMetric().evaluate(preds, ds)
    for c, name in enumerate(ds.class_names):
        r = kept[c] / total[c]
        assert out[f"voc_AP/{name}"] == pytest.approx(r), name
    expected_11 = np.mean([sum(t <= kept[c] / total[c] + 1e-12 for t in np.linspace(0, 1, 11)) / 11 for c in range(3)])
    assert out["voc_mAP_11pt"] == pytest.approx(expected_11)
    assert out["voc_mAP"] == pytest.approx(np.mean([kept[c] / total[c] for c in range(3)]))
    assert 0.7 < out["voc_mAP"] < 0.8
