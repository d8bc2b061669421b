"""Accuracy parity: ``detcore train`` vs a plain torchvision training loop.

Both train torchvision's ``fasterrcnn_mobilenet_v3_large_320_fpn`` from
scratch (detcore: the ``faster_rcnn`` + ``mobilenet_v3`` table of
``configs/models/faster_rcnn_mobilenet_v3_320_fpn.toml``; the reference: the
torchvision builder itself) on BCCD (../shared/data/bccd, Pascal VOC,
converted to COCO with detcore-coco's converter into a temporary directory),
with the same batch size, SGD settings (weight decay on every parameter, as
torchvision's references/detection/train.py), linear warmup, multi-step
schedule, horizontal flip, number of epochs and seed, then evaluates both on
BCCD's val split with pycocotools and prints both bbox mAPs and their ratio.

The reference loop follows torchvision's references/detection/engine.py
(``train_one_epoch``: warmup LinearLR in the first epoch, summed losses, SGD
step) and utils (``collate_fn``); its data are read with torchvision.io and
pycocotools, not detcore.

    python benchmarks/accuracy_parity.py                      # defaults below, CPU, one thread
    python benchmarks/accuracy_parity.py --epochs 12 --train-images 205 --device cuda

The two runs are sequential, each on one thread. On a CPU the default is
sized for about 15 minutes in all; detections from a detector trained from
scratch for a few epochs are weak, so the comparison is "within noise of
the reference, and not near 0 where the reference is not".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DETCORE_SHARED_DATA", REPO.parent / "shared" / "data"))
CLASSES = ["Platelets", "RBC", "WBC"]

# torchvision builder keyword arguments, given to both models: fewer RoIs per
# image than torchvision's defaults keep a CPU step short (the same in both).
LIGHT = {"rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 300, "box_batch_size_per_image": 64}

RUN = """\
seed = {seed}
device = "{device}"
work_dir = "{work_dir}"

[model]
type = "faster_rcnn"
num_classes = {num_classes}
backbone = {{ type = "mobilenet_v3", arch = "large" }}
{model_settings}

[data]
batch_size = {batch}
workers = 0
aspect_ratio_grouping = false

[data.train]
type = "coco"
ann_file = "{train_json}"
img_dir = "{img_dir}"
transforms = [{{ type = "random_horizontal_flip", p = 0.5 }}]

[data.val]
type = "coco"
ann_file = "{val_json}"
img_dir = "{img_dir}"

[optimizer]
type = "sgd"
lr = {lr}
momentum = 0.9
weight_decay = {wd}
norm_decay = true
bias_decay = true

[lr_schedule]
type = "multistep"
milestones = {milestones}
gamma = 0.1
warmup = "linear"
warmup_iters = {warmup}
warmup_ratio = 0.001

[train]
max_epochs = {epochs}
val_interval = {epochs}

[checkpoint]
interval = {epochs}

[[metrics]]
type = "coco"
iou_types = ["bbox"]
"""


def _model_settings(light: dict) -> str:
    """The detector settings of the shipped 320 config, plus ``light``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib

    model = tomllib.loads((REPO / "configs" / "models" / "faster_rcnn_mobilenet_v3_320_fpn.toml").read_text())["model"]
    settings = {k: v for k, v in model.items() if k not in ("type", "num_classes", "backbone", "neck")}
    renamed = {"box_batch_size_per_image": "box_batch_size_per_image"}
    settings.update({renamed.get(k, k): v for k, v in light.items()})
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())


# ----------------------------------------------------------------------
# data
# ----------------------------------------------------------------------


def convert(out_dir: Path, split: str, limit: int | None, seed: int) -> Path:
    """BCCD's ``split`` (ImageSets/Main/<split>.txt, optionally a random
    ``limit`` of it) as a COCO file in ``out_dir``, with detcore-coco's
    VOC converter."""
    from detcore_coco.convert import voc_to_coco

    bccd = DATA / "bccd"
    ids = (bccd / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    if limit is not None and limit < len(ids):
        ids = sorted(random.Random(seed).sample(ids, limit))
    ids_file = out_dir / f"{split}_ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    data, _ = voc_to_coco(str(bccd / "Annotations"), str(bccd / "JPEGImages"), names=CLASSES, ids_file=str(ids_file))
    path = out_dir / f"{split}.json"
    path.write_text(json.dumps(data))
    return path


class ReferenceDataset:
    """COCO images and boxes as torchvision's references read them
    (CocoDetection + ConvertCocoPolysToMask, boxes only): labels are the
    category's index + 1 (0 is the background), crowd boxes dropped."""

    def __init__(self, ann_file: Path, img_dir: Path, train: bool):
        import contextlib
        import io

        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
            self.coco = COCO(str(ann_file))
        self.ids = sorted(self.coco.imgs)
        self.cat_ids = sorted(self.coco.cats)
        self.img_dir = img_dir
        self.train = train

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        import torch
        from torchvision.io import ImageReadMode, decode_image, read_file

        info = self.coco.imgs[self.ids[i]]
        image = decode_image(read_file(str(self.img_dir / info["file_name"])), mode=ImageReadMode.RGB)
        image = image.float() / 255
        anns = [a for a in self.coco.imgToAnns[self.ids[i]] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        labels = torch.tensor([self.cat_ids.index(a["category_id"]) + 1 for a in anns], dtype=torch.int64)
        if self.train and torch.rand(1) < 0.5:  # references' RandomHorizontalFlip(0.5)
            image = image.flip(-1)
            w = image.shape[-1]
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
        return image, {"boxes": boxes, "labels": labels, "image_id": self.ids[i]}


def collate_fn(batch):
    return tuple(zip(*batch))


# ----------------------------------------------------------------------
# the reference loop
# ----------------------------------------------------------------------


def reference(args, train_json: Path, val_json: Path) -> dict:
    import numpy as np
    import torch
    from pycocotools.cocoeval import COCOeval
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    device = torch.device(args.device)
    model = fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=len(CLASSES) + 1, **LIGHT
    ).to(device)
    img_dir = DATA / "bccd" / "JPEGImages"
    train_set = ReferenceDataset(train_json, img_dir, train=True)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch, shuffle=True, num_workers=0, collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(args.seed), drop_last=False,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.wd)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=args.milestones, gamma=0.1)
    start = time.time()
    for epoch in range(args.epochs):
        # engine.train_one_epoch
        model.train()
        warmup = None
        if epoch == 0:
            warmup = torch.optim.lr_scheduler.LinearLR(
                optimizer, start_factor=0.001, total_iters=min(args.warmup, len(loader) - 1)
            )
        for images, targets in loader:
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            loss_dict = model(images, targets)
            losses = sum(loss for loss in loss_dict.values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            if warmup is not None:
                warmup.step()
        scheduler.step()
        print(f"  reference: epoch {epoch + 1}/{args.epochs} done, last loss {losses.item():.3f}", flush=True)
    train_time = time.time() - start

    # references' evaluate(): COCO bbox mAP on the val split
    val_set = ReferenceDataset(val_json, img_dir, train=False)
    model.eval()
    results = []
    with torch.no_grad():
        for i in range(len(val_set)):
            image, target = val_set[i]
            out = model([image.to(device)])[0]
            for box, score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
                x0, y0, x1, y1 = box
                results.append({"image_id": target["image_id"], "category_id": val_set.cat_ids[label - 1],
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    return {**_coco_eval(val_set.coco, results, COCOeval), "train_s": train_time}


def _coco_eval(gt, results, COCOeval) -> dict:
    import contextlib
    import io

    if not results:
        return {"mAP": 0.0, "mAP_50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mAP": float(ev.stats[0]), "mAP_50": float(ev.stats[1])}


# ----------------------------------------------------------------------
# detcore
# ----------------------------------------------------------------------


def detcore_run(args, tmp: Path, train_json: Path, val_json: Path) -> dict:
    work_dir = tmp / "work"
    run = tmp / "run.toml"
    run.write_text(RUN.format(
        seed=args.seed, device=args.device, work_dir=work_dir, num_classes=len(CLASSES),
        model_settings=_model_settings(LIGHT), batch=args.batch, train_json=train_json, val_json=val_json,
        img_dir=DATA / "bccd" / "JPEGImages", lr=args.lr, wd=args.wd, milestones=list(args.milestones),
        warmup=args.warmup, epochs=args.epochs,
    ))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "detcore", "train", str(run)], env=env, cwd=tmp,
                          capture_output=True, text=True)
    elapsed = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"detcore train failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    lines = [json.loads(x) for x in (work_dir / "scalars.jsonl").read_text().splitlines() if x.strip()]
    val = [x for x in lines if x.get("mode") == "val"][-1]
    return {"mAP": float(val["bbox_mAP"]), "mAP_50": float(val["bbox_mAP_50"]), "train_s": elapsed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-images", type=int, default=60, help="images of BCCD's train split used (all: 205)")
    p.add_argument("--val-images", type=int, default=40, help="images of BCCD's val split evaluated (all: 87)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--wd", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=20, help="warmup iterations (in the first epoch)")
    p.add_argument("--milestones", type=int, nargs="*", default=None, help="epochs; default: the last epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep", metavar="DIR", help="keep the converted data and detcore's work dir here")
    args = p.parse_args(argv)
    if args.milestones is None:
        args.milestones = [max(1, args.epochs - 1)]
    if not (DATA / "bccd" / "Annotations").is_dir():
        sys.exit(f"BCCD not found at {DATA / 'bccd'} (set DETCORE_SHARED_DATA)")

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(args.keep or td)
        tmp.mkdir(parents=True, exist_ok=True)
        train_json = convert(tmp, "train", args.train_images, args.seed)
        val_json = convert(tmp, "val", args.val_images, args.seed)
        print(f"BCCD: {args.train_images} train / {args.val_images} val images, {args.epochs} epochs, "
              f"batch {args.batch}, lr {args.lr}, milestones {args.milestones}, {args.device}", flush=True)
        ours = detcore_run(args, tmp, train_json, val_json)
        print(f"  detcore: done in {ours['train_s']:.0f} s", flush=True)
        theirs = reference(args, train_json, val_json)

    print()
    print("fasterrcnn_mobilenet_v3_large_320_fpn from scratch on BCCD")
    print(f"{'':12s} {'bbox mAP':>9s} {'mAP50':>7s} {'time (s)':>9s}")
    for name, r in (("detcore", ours), ("torchvision", theirs)):
        print(f"{name:12s} {r['mAP']:9.4f} {r['mAP_50']:7.4f} {r['train_s']:9.0f}")
    ratio = ours["mAP"] / theirs["mAP"] if theirs["mAP"] > 0 else float("nan")
    ratio50 = ours["mAP_50"] / theirs["mAP_50"] if theirs["mAP_50"] > 0 else float("nan")
    print(f"ratio detcore / torchvision: mAP {ratio:.3f}, mAP50 {ratio50:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
