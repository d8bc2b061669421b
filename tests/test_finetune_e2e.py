"""The custom-dataset tutorial (docs/custom_dataset.md) end to end, in subprocesses.

A small VIA dataset (polygons on generated images, laid out as the balloon
dataset is) is converted and checked with ``detcore coco``; Mask R-CNN is
fine-tuned with ``configs/custom/mask_rcnn_r50_fpn_finetune.toml`` from
"COCO weights": torchvision's ``maskrcnn_resnet50_fpn(weights=None,
weights_backbone=None)`` random state dict saved under the exact file name of
``MaskRCNN_ResNet50_FPN_Weights.COCO_V1`` in a temporary ``$TORCH_HOME``.
Then ``detcore test`` (bbox and segm mAP) and ``detcore predict`` run on the
checkpoint, the same weights load through ``--load-from FILE``, and bad
weights (a wrong name, another architecture, a truncated file) are clear
errors. Every subprocess has its proxy pointed at a closed local port, so an
attempt to download anything fails instead of touching the network.

In-process weight loading (every non-head tensor equal, key-for-key
compatibility with torchvision) is tested in tests/test_model_weights.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from detcore.testing import run_detcore, write_runfile

pytest.importorskip("pycocotools")

import torch  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUN_FILE = REPO / "configs" / "custom" / "mask_rcnn_r50_fpn_finetune.toml"
# CPU-sized: the images are 128x96, the model sees them at 160x120.
SMALL = ["--set", "model.min_size=128", "--set", "model.max_size=160", "--set", "data.workers=0", "--device", "cpu"]
HEADS = (
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.bias",
)
# Frozen under trainable_layers = 3: after training they still equal the file.
FROZEN = ("backbone.body.conv1.", "backbone.body.bn1.", "backbone.body.layer1.")


def coco_v1_file_name() -> str:
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    return os.path.basename(MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url)


def write_via_split(split_dir: Path, n: int, seed: int) -> None:
    """``n`` JPEG images with two filled polygons each and the VIA export
    (``via_region_data.json``, the balloon dataset's format) describing them."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    split_dir.mkdir(parents=True)
    via = {}
    for i in range(n):
        img = Image.new("RGB", (128, 96), tuple(rng.randint(0, 90) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        regions = {}
        for r in range(2):
            cx, cy = rng.uniform(30, 98), rng.uniform(28, 68)
            rx, ry = rng.uniform(10, 22), rng.uniform(12, 24)
            xs = [round(cx + rx * math.cos(2 * math.pi * k / 12)) for k in range(12)]
            ys = [round(cy + ry * math.sin(2 * math.pi * k / 12)) for k in range(12)]
            draw.polygon(list(zip(xs, ys)), fill=(220, 50 + 80 * r, 40))
            regions[str(r)] = {
                "shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
                "region_attributes": {},
            }
        name = f"{i:04d}.jpg"
        img.save(split_dir / name, quality=95)
        size = (split_dir / name).stat().st_size
        via[f"{name}{size}"] = {"fileref": "", "size": size, "filename": name, "base64_img_data": "",
                                "file_attributes": {}, "regions": regions}
    (split_dir / "via_region_data.json").write_text(json.dumps(via))


class Workspace:
    """The tutorial's working directory: ``data/balloon/{train,val}`` and a
    ``$TORCH_HOME`` holding the "COCO" file."""

    def __init__(self, root: Path):
        self.root = root
        self.torch_home = root / "torch_home"
        self.coco_file = self.torch_home / "hub" / "checkpoints" / coco_v1_file_name()
        self.empty_torch_home = root / "empty_torch_home"
        self.empty_torch_home.mkdir()

    def env(self, torch_home: Path | None = None) -> dict:
        """What a subprocess's environment changes (``run_detcore``'s ``env``;
        ``None`` removes a variable): its ``$TORCH_HOME``, and every proxy
        pointed at a closed port with no exemptions."""
        blocked = "http://127.0.0.1:9"  # discard port: a download attempt fails at once
        return {
            **{k: None for k in os.environ if k.lower() in ("no_proxy", "all_proxy")},
            "TORCH_HOME": str(torch_home or self.torch_home),
            **dict.fromkeys(("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"), blocked),
        }

    def detcore(self, *args, cwd: Path | None = None, torch_home: Path | None = None) -> subprocess.CompletedProcess:
        return run_detcore(*args, cwd=cwd or self.root, env=self.env(torch_home), timeout=600)


def output(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error: non-zero exit, one ``detcore: error:`` paragraph, no traceback."""
    assert proc.returncode != 0, output(proc)
    assert "Traceback" not in proc.stderr + proc.stdout, output(proc)
    assert "detcore: error:" in proc.stderr, output(proc)
    message = proc.stderr[proc.stderr.index("detcore: error:"):]
    for needle in needles:
        assert needle in message, output(proc)
    return message


def read(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    import torchvision

    w = Workspace(tmp_path_factory.mktemp("finetune"))
    write_via_split(w.root / "data" / "balloon" / "train", 4, seed=0)
    write_via_split(w.root / "data" / "balloon" / "val", 2, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
        w.coco_file.parent.mkdir(parents=True)
        torch.save(model.state_dict(), w.coco_file)
    finally:
        torch.set_num_threads(threads)
    return w


@pytest.fixture(scope="module")
def converted(ws: Workspace) -> Workspace:
    for split in ("train", "val"):
        proc = ws.detcore("coco", "convert", "via", f"data/balloon/{split}/via_region_data.json",
                          "--images", f"data/balloon/{split}", "--out", f"data/balloon/{split}.json",
                          "--category", "balloon")
        assert proc.returncode == 0, output(proc)
        assert "categories: balloon" in proc.stdout, output(proc)
        proc = ws.detcore("coco", "check", f"data/balloon/{split}.json", f"data/balloon/{split}")
        assert proc.returncode == 0, output(proc)
        assert proc.stdout.rstrip().endswith("OK"), output(proc)
    # The run file's paths and class names now check against the converted files.
    proc = ws.detcore("config", "check", RUN_FILE)
    assert proc.returncode == 0, output(proc)
    return ws


@pytest.fixture(scope="module")
def trained(converted: Workspace) -> tuple[Workspace, subprocess.CompletedProcess, Path]:
    """The tutorial's ``detcore train`` with ``weights = "COCO_V1"``: one
    epoch of 4 images in batches of 2."""
    ws = converted
    proc = ws.detcore("train", RUN_FILE, *SMALL, "--set", "train.max_epochs=1", "--set", "train.log_interval=1",
                      "--no-validate", "--work-dir", "work_dirs/balloon")
    return ws, proc, ws.root / "work_dirs" / "balloon" / "epoch_1.pth"


def test_via_converts_to_coco_with_polygons(converted: Workspace):
    data = json.loads((converted.root / "data" / "balloon" / "train.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "balloon"}]
    assert len(data["images"]) == 4 and len(data["annotations"]) == 8
    for ann in data["annotations"]:
        poly = ann["segmentation"][0]
        assert len(poly) == 24 and ann["area"] > 0
        x, y, w, h = ann["bbox"]
        assert min(poly[0::2]) == pytest.approx(x + 0.5) and max(poly[1::2]) == pytest.approx(y + h + 0.5)


def test_finetune_starts_from_the_coco_weights(trained):
    ws, proc, ckpt_path = trained
    assert proc.returncode == 0, output(proc)
    assert ckpt_path.is_file(), output(proc)
    ckpt = read(ckpt_path)
    saved = read(ws.coco_file)
    model = ckpt["model"]
    # The class names travel with the model.
    assert ckpt["meta"]["class_names"] == ["balloon"]
    # num_classes = 1: new heads (background + balloon), not the file's 91 classes.
    assert tuple(model["roi_heads.box_predictor.cls_score.weight"].shape) == (2, 1024)
    assert tuple(model["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape) == (2, 256, 1, 1)
    # Frozen stages hold the file's tensors exactly, after two training steps.
    frozen = [k for k in model if k.startswith(FROZEN)]
    assert len(frozen) > 20
    for key in frozen:
        assert torch.equal(model[key], saved[key]), key
    # ... while the heads trained.
    assert not torch.equal(model["roi_heads.box_head.fc6.weight"], saved["roi_heads.box_head.fc6.weight"])


def test_finetune_prints_and_logs_the_load_summary(trained):
    """The summary of what ``weights = "COCO_V1"`` loaded names the skipped
    class-dependent layers, on the console and in the work dir's log."""
    ws, proc, ckpt_path = trained
    assert proc.returncode == 0, output(proc)
    log = "\n".join(p.read_text() for p in ckpt_path.parent.glob("*.log"))
    for text in (proc.stdout + proc.stderr, log):
        assert re.search(r"\d+ tensors loaded, 6 skipped for shape, 0 missing", text), output(proc)
        for key in HEADS:
            assert key in text, output(proc)


def test_test_prints_bbox_and_segm_map(trained):
    ws, proc, ckpt_path = trained
    assert proc.returncode == 0, output(proc)
    test = ws.detcore("test", RUN_FILE, "--checkpoint", ckpt_path, *SMALL, "--out", "work_dirs/balloon/results.json")
    assert test.returncode == 0, output(test)
    for iou_type in ("bbox", "segm"):
        for name in ("mAP", "mAP_50", "mAP_75"):
            m = re.search(rf"(?<![\w@]){iou_type}_{name}(?:=|\s+)(-?\d+\.\d+)", test.stdout)
            assert m, output(test)
            assert -1.0 <= float(m.group(1)) <= 1.0
    assert json.loads((ws.root / "work_dirs" / "balloon" / "results.json").read_text()) is not None
    assert (ws.root / "work_dirs" / "balloon" / "results.segm.json").is_file()


def test_predict_names_the_classes_from_the_checkpoint(trained):
    """The tutorial's predict command."""
    ws, proc, ckpt_path = trained
    assert proc.returncode == 0, output(proc)
    pred = ws.detcore("predict", RUN_FILE, "--checkpoint", ckpt_path, "data/balloon/val", *SMALL,
                      "--out-dir", "work_dirs/balloon/vis", "--score-thr", "0")
    assert pred.returncode == 0, output(pred)
    record = json.loads((ws.root / "work_dirs" / "balloon" / "vis" / "predictions.json").read_text())
    assert record["class_names"] == ["balloon"]
    assert len(record["images"]) == 2
    assert {d["class"] for im in record["images"] for d in im["detections"]} <= {"balloon"}


def test_predict_with_the_checkpoint_alone(trained):
    """The checkpoint deployed alone: a run file with only the trained
    ``[model]`` table (no dataset, so no class names anywhere but in the
    checkpoint), in a directory without the data, on a machine without the
    COCO weights file (the checkpoint holds every weight)."""
    ws, proc, ckpt_path = trained
    assert proc.returncode == 0, output(proc)
    from detcore.runfile.loader import tomllib

    resolved = tomllib.loads((ws.root / "work_dirs" / "balloon" / "resolved.toml").read_text())
    deploy = ws.root / "deploy"
    deploy.mkdir()
    write_runfile(deploy / "model.toml", {"model": {**resolved["model"], "score_thresh": 0.0}})
    shutil.copy(ws.root / "data" / "balloon" / "val" / "0000.jpg", deploy / "photo.jpg")
    shutil.copy(ckpt_path, deploy / "balloon.pth")
    pred = ws.detcore("predict", "model.toml", "--checkpoint", "balloon.pth", "photo.jpg", *SMALL, "--out-dir", "vis", "--score-thr", "0",
                      cwd=deploy, torch_home=ws.empty_torch_home)
    assert pred.returncode == 0, output(pred)
    record = json.loads((deploy / "vis" / "predictions.json").read_text())
    assert record["class_names"] == ["balloon"]
    (image,) = record["images"]
    assert image["detections"], output(pred)
    assert {d["class"] for d in image["detections"]} == {"balloon"}
    assert all("mask_rle" in d for d in image["detections"])


def test_resume_needs_no_coco_weights_file(trained):
    """Resuming the fine-tuning run restores every weight from the checkpoint:
    the COCO file is not needed (and not downloaded) again."""
    ws, proc, ckpt_path = trained
    assert proc.returncode == 0, output(proc)
    work = ws.root / "work_dirs" / "resumed"
    work.mkdir()
    shutil.copy(ckpt_path, work / "epoch_1.pth")
    # Two more iterations (the second epoch) from the copied checkpoint.
    resumed = ws.detcore("train", RUN_FILE, *SMALL, "--set", "train.max_epochs=2", "--no-validate",
                         "--work-dir", work, "--resume", work / "epoch_1.pth", torch_home=ws.empty_torch_home)
    assert resumed.returncode == 0, output(resumed)
    assert read(work / "epoch_2.pth")["meta"]["epoch"] == 2


LOAD_FROM_RUN_FILE = """\
# The tutorial's run file without detector-level weights: load_from is the only source.
extends = {base}

[model]
_replace_ = true
type = "mask_rcnn"
num_classes = 1
backbone = {{ type = "resnet", depth = 50, norm = "frozen_bn", trainable_layers = 3 }}
"""


@pytest.fixture(scope="module")
def load_from_run(converted: Workspace) -> Path:
    path = converted.root / "load_from.toml"
    path.write_text(LOAD_FROM_RUN_FILE.format(base=json.dumps(str(RUN_FILE))))
    return path


def test_the_same_weights_through_load_from(converted: Workspace, load_from_run: Path):
    ws = converted
    # Train on the 2 val images: one iteration. No TORCH_HOME file: the
    # weights can only come from --load-from.
    proc = ws.detcore("train", load_from_run, "--load-from", ws.coco_file, *SMALL, "--set", "train.max_epochs=1",
                      "--set", "data.train.ann_file=data/balloon/val.json", "--set", "data.train.img_dir=data/balloon/val",
                      "--no-validate", "--work-dir", "work_dirs/load_from", torch_home=ws.empty_torch_home)
    assert proc.returncode == 0, output(proc)
    text = proc.stdout + proc.stderr
    m = re.search(r"loaded weights from (.+?): (\d+) tensors loaded, 6 skipped for shape, 0 missing", text)
    assert m, output(proc)
    assert m.group(1).endswith(coco_v1_file_name())
    for key in HEADS:
        assert key in text, output(proc)
    saved = read(ws.coco_file)
    model = read(ws.root / "work_dirs" / "load_from" / "epoch_1.pth")["model"]
    non_head = [k for k in model if k in saved and not k.startswith(HEADS)]
    assert int(m.group(2)) == len(non_head)
    for key in (k for k in model if k.startswith(FROZEN)):
        assert torch.equal(model[key], saved[key]), key


def legacy_key_names(state: dict) -> dict:
    """``state`` under the key names of torchvision's checkpoints published
    before its layers moved to Conv2dNormActivation, which the real COCO_V1
    files (``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``) still use."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"((?:inner|layer)_blocks\.\d+)\.0\.", r"\1.", key)
        key = re.sub(r"(rpn\.head\.conv)\.0\.0\.", r"\1.", key)
        key = re.sub(r"(mask_head)\.(\d+)\.0\.", lambda m: f"{m[1]}.mask_fcn{int(m[2]) + 1}.", key)
        out[key] = value
    return out


def test_load_from_a_torchvision_coco_file_with_its_published_key_names(converted, load_from_run, monkeypatch):
    from detcore.engine.build import build_model
    from detcore.engine.checkpoint import load_weights
    from detcore.runfile import load_run

    ws = converted
    saved = read(ws.coco_file)
    legacy = legacy_key_names(saved)
    assert len(set(legacy) - set(saved)) == 26  # 8 FPN convs, the RPN conv, 4 mask-head convs
    torch.save(legacy, ws.root / "legacy_names.pth")
    monkeypatch.chdir(ws.root)  # the run file's data paths are relative
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(load_run(load_from_run, ["model.min_size=128", "model.max_size=160"]))
        report = load_weights(model, ws.root / "legacy_names.pth")
    finally:
        torch.set_num_threads(threads)
    assert report.missing == ()
    assert sorted(k for k, _, _ in report.skipped_shape) == sorted(HEADS)
    state = model.state_dict()
    for key in ("backbone.fpn.inner_blocks.0.0.weight", "rpn.head.conv.0.0.weight", "roi_heads.mask_head.0.0.weight"):
        assert torch.equal(state[key], saved[key]), key


# ---------------------------------------------------------------------------
# bad weights: each a clear error. (A truncated or foreign --load-from file is
# tested on a small model in tests/test_checkpoint.py.)
# ---------------------------------------------------------------------------


def test_wrong_weights_name(converted: Workspace):
    ws = converted
    bad = ws.root / "bad_weights.toml"
    bad.write_text(f'extends = {json.dumps(str(RUN_FILE))}\n\n[model]\nweights = "COCO_V9"\n')
    proc = ws.detcore("train", bad, *SMALL)
    message = assert_clean_error(proc, "bad_weights.toml", "model.weights", "COCO_V9",
                                 "MaskRCNN_ResNet50_FPN_Weights.COCO_V1")
    assert proc.returncode == 2, message


def test_coco_weights_file_of_another_architecture(converted: Workspace):
    """A classification network's state dict under the COCO_V1 file name: it
    shares no tensor with Mask R-CNN."""
    import torchvision

    ws = converted
    home = ws.root / "other_arch_torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(),
               home / "hub" / "checkpoints" / coco_v1_file_name())
    proc = ws.detcore("train", RUN_FILE, *SMALL, "--no-validate", "--work-dir", "work_dirs/bad", torch_home=home)
    assert_clean_error(proc, coco_v1_file_name(), "mask_rcnn")


def test_truncated_coco_weights_file(converted: Workspace):
    ws = converted
    home = ws.root / "truncated_torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    with open(ws.coco_file, "rb") as f:
        (home / "hub" / "checkpoints" / coco_v1_file_name()).write_bytes(f.read(1 << 20))
    proc = ws.detcore("train", RUN_FILE, *SMALL, "--no-validate", "--work-dir", "work_dirs/bad", torch_home=home)
    assert_clean_error(proc, str(home / "hub" / "checkpoints" / coco_v1_file_name()), "truncated")
