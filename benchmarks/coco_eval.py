"""COCO evaluation time: pycocotools vs faster-coco-eval through the ``coco`` metric.

Builds a synthetic ground truth (``--images`` images, ``--gt`` boxes each, 80
categories) and detections (each GT box jittered, plus random false
positives, ``--dets`` per image), evaluates them with both backends in one
run, and prints both times, the speed-up and the largest difference between
the 12 COCO numbers of the two backends.

    python benchmarks/coco_eval.py                      # ~1-2 min on 2 CPU cores
    python benchmarks/coco_eval.py --images 5000 --dets 100   # COCO val scale
"""

from __future__ import annotations

import argparse
import time

import numpy as np


class _GroundTruth:
    """The attributes the coco metric reads from a dataset."""

    def __init__(self, coco, cat_ids, img_ids):
        self.coco = coco
        self.cat_ids = cat_ids
        self.img_ids = img_ids
        self.class_names = [f"class{c}" for c in cat_ids]


def synthetic(images: int, gt_per_image: int, dets_per_image: int, seed: int = 0):
    import torch
    from detcore_coco.dataset import make_coco

    rng = np.random.default_rng(seed)
    cat_ids = list(range(1, 81))
    size = 640
    imgs, anns, preds = [], [], []
    for i in range(1, images + 1):
        imgs.append({"id": i, "file_name": f"{i}.jpg", "width": size, "height": size})
        n = gt_per_image
        wh = rng.uniform(8, 300, size=(n, 2))
        xy = rng.uniform(0, size - wh)
        labels = rng.integers(0, 80, size=n)
        for k in range(n):
            anns.append({
                "id": len(anns) + 1, "image_id": i, "category_id": cat_ids[labels[k]],
                "bbox": [float(xy[k, 0]), float(xy[k, 1]), float(wh[k, 0]), float(wh[k, 1])],
                "area": float(wh[k, 0] * wh[k, 1]), "iscrowd": 0,
            })
        # Detections: jittered copies of the GT (some with the wrong label) and clutter.
        m = dets_per_image - n
        jit = np.concatenate([xy, xy + wh], 1) + rng.normal(0, 6, size=(n, 4))
        fxy = rng.uniform(0, size - 40, size=(m, 2))
        fwh = rng.uniform(8, 200, size=(m, 2))
        boxes = np.concatenate([jit, np.concatenate([fxy, np.minimum(fxy + fwh, size)], 1)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        flip = rng.random(n) < 0.1
        det_labels = np.concatenate([np.where(flip, rng.integers(0, 80, size=n), labels), rng.integers(0, 80, size=m)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, size=n), rng.uniform(0.0, 0.6, size=m)])
        preds.append({
            "image_id": i,
            "boxes": torch.from_numpy(boxes.astype(np.float32)),
            "scores": torch.from_numpy(scores.astype(np.float32)),
            "labels": torch.from_numpy(det_labels.astype(np.int64)),
        })
    coco = make_coco({"images": imgs, "annotations": anns, "categories": [{"id": c, "name": f"class{c}"} for c in cat_ids]})
    return _GroundTruth(coco, cat_ids, [im["id"] for im in imgs]), preds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000, help="images (default 3000)")
    parser.add_argument("--gt", type=int, default=7, help="ground-truth boxes per image (default 7, as COCO)")
    parser.add_argument("--dets", type=int, default=100, help="detections per image (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from detcore_coco.metric import CocoMetric, stat_keys

    t0 = time.perf_counter()
    dataset, preds = synthetic(args.images, args.gt, args.dets, args.seed)
    print(f"synthetic set: {args.images} images, {args.images * args.gt} GT boxes, "
          f"{args.images * args.dets} detections ({time.perf_counter() - t0:.1f} s to build)")
    results, times = {}, {}
    for backend in ("pycocotools", "faster_coco_eval"):
        metric = CocoMetric(iou_types=["bbox"], backend=backend)
        t0 = time.perf_counter()
        results[backend] = metric.evaluate(preds, dataset)
        times[backend] = time.perf_counter() - t0
        print(f"{backend:>17s}: {times[backend]:7.2f} s   bbox_mAP {results[backend]['bbox_mAP']:.4f}")
    diff = max(abs(results["pycocotools"][k] - results["faster_coco_eval"][k]) for k in stat_keys("bbox"))
    print(f"speed-up (pycocotools / faster_coco_eval): {times['pycocotools'] / times['faster_coco_eval']:.1f}x")
    print(f"largest difference between the 12 stats: {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
