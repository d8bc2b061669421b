"""detcore test / predict / browse-dataset / benchmark / export / analyze / plot,
end to end in subprocesses on a tiny FCOS trained once for this module on
64-pixel shapes data (detcore-coco's make-shapes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detcore.testing import read_scalars, run_detcore

pytestmark = pytest.mark.slow

pytest.importorskip("detcore_coco", reason="these tests use the coco dataset and metric of detcore-coco")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "tools.md"

# The tools' model: shapes_run's (tests/conftest.py), 80 iterations on 48 images.
TRAIN = {
    "data": {"batch_size": 8, "train": {"transforms": [{"type": "random_horizontal_flip", "p": 0.5}]}},
    "optimizer": {"lr": 0.005},
    "lr_schedule": {"warmup_iters": 10},
    "train": {"max_iters": 80, "val_interval": 80, "log_interval": 10, "grad_clip": 10.0},
    "checkpoint": {"interval": 80, "keep": 1, "save_best": "bbox_mAP"},
}


QUIET = {"PYTHONWARNINGS": "ignore"}


def env() -> dict:
    # One intra-op thread per process: on a busy 2-core machine torch's
    # default thread pool makes each step many times slower.
    return {**os.environ, "OMP_NUM_THREADS": "1", **QUIET}


def detcore(*args, cwd, check=True, timeout=300) -> subprocess.CompletedProcess:
    return run_detcore(*args, cwd=cwd, env=QUIET, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_run):
    """A work dir with shapes data (48 train / 16 val images of 64 px), the
    run file and the checkpoint of an 80-iteration training run."""
    root = tmp_path_factory.mktemp("tools")
    detcore("coco", "make-shapes", "shapes", "--train", 48, "--val", 16, "--size", 64, cwd=root)
    (root / "run.toml").write_text(shapes_run(TRAIN))
    detcore("train", "run.toml", cwd=root)
    ckpt = root / "work" / "iter_80.pth"
    assert ckpt.is_file()
    return root


def doc_snippet(marker: str) -> str:
    """The fenced code block after ``<!-- marker -->`` in docs/tools.md (indent removed)."""
    lines = DOCS.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == f"<!-- {marker} -->")
    fence = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("```"))
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].strip() == "```")
    return textwrap.dedent("\n".join(lines[fence + 1 : end]))


def metrics_line(stdout: str) -> dict[str, float]:
    line = next(ln for ln in stdout.splitlines() if "metrics: " in ln)
    return {k: float(v) for k, v in re.findall(r"(\S+)=(-?[\d.]+)", line.split("metrics: ", 1)[1])}


def image_info(path: Path) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    with Image.open(path) as im:
        return im.format, im.size


def pixel(path: Path, x: int, y: int) -> tuple[int, int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB").getpixel((x, y))


def has_box_bottom_edge(path: Path, box, color, size) -> bool:
    """The bottom edge of ``box`` (xyxy) is drawn in ``color`` (±1 pixel for rounding)."""
    w, h = size
    x1, _, x2, y2 = box
    x = min(max(int((x1 + x2) / 2), 0), w - 1)
    rows = {min(max(int(y2) + d, 0), h - 1) for d in (-1, 0, 1)}
    return any(pixel(path, x, y) == tuple(color) for y in rows)


# ----------------------------------------------------------------------
# detcore test
# ----------------------------------------------------------------------


def test_test_prints_table_dumps_coco_results_and_draws(trained):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    r = detcore("test", "run.toml", "--checkpoint", "work/iter_80.pth", "--out", "preds.json",
                "--show-dir", "shown", cwd=trained)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in r.stdout
    printed = metrics_line(r.stdout)
    # the trained model detects something: the check below is not 0 == 0
    assert printed["bbox_mAP_50"] > 0.3

    # the dumped predictions load with loadRes and give the same numbers
    gt = COCO(str(trained / "shapes" / "val.json"))
    dt = gt.loadRes(str(trained / "preds.json"))
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(printed["bbox_mAP"], abs=1e-4)
    assert ev.stats[1] == pytest.approx(printed["bbox_mAP_50"], abs=1e-4)

    # one drawn JPEG per image: ground truth and predictions side by side
    # (4 px apart), under a caption strip
    shown = sorted((trained / "shown").iterdir())
    images = {img["id"]: img for img in gt.dataset["images"]}
    assert len(shown) == len(images) == 16
    for f in shown:
        img = images[int(f.stem)]
        fmt, (w, h) = image_info(f)
        assert fmt == "JPEG" and w == 2 * img["width"] + 4 and img["height"] + 8 <= h <= img["height"] + 30


def test_test_without_metric_summary_or_dump_prints_a_table_and_writes_detcore_json(trained, shapes_run):
    """A metric without ``summary``/``dump`` (the example plugin's
    box_recall): a name/value table, and ``--out`` in detcore's own JSON."""
    pytest.importorskip("detcore_example")
    run = shapes_run(TRAIN, metrics=[{"type": "box_recall"}])
    (trained / "recall.toml").write_text(run)
    r = detcore("test", "recall.toml", "--checkpoint", "work/iter_80.pth", "--out", "generic.json", cwd=trained)
    assert "Average Precision" not in r.stdout
    recall = metrics_line(r.stdout)["recall"]
    assert re.search(rf"^  recall  {recall:.4f}$", r.stdout, flags=re.M)
    records = json.loads((trained / "generic.json").read_text())
    assert len(records) == 16 and set(records[0]) == {"image_id", "boxes", "scores", "labels"}
    assert "wrote generic.json (16 images, detcore predictions JSON)" in r.stdout


def test_result_plots_of_a_run_and_of_detcore_test(trained):
    import numpy as np
    from PIL import Image

    def nontrivial(path):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width > 400
            return len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 20

    # the training run drew its last validation's figures into the work dir ...
    plots = trained / "work" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["bbox_PR_curve.png", "confusion_matrix.png"]
    assert all(nontrivial(p) for p in plots.iterdir())
    log = next((trained / "work").glob("*.log")).read_text()
    assert "CocoMetric: wrote" in log and "confusion_matrix.png" in log
    # ... and detcore test --plots draws the same for the split it evaluates
    r = detcore("test", "run.toml", "--checkpoint", "work/iter_80.pth", "--plots", "plots_test", cwd=trained)
    assert "plots_test/bbox_PR_curve.png" in r.stdout and "plots_test/confusion_matrix.png" in r.stdout
    assert nontrivial(trained / "plots_test" / "bbox_PR_curve.png")
    # the same checkpoint and data: the same figure as the run's last validation
    a = np.asarray(Image.open(plots / "confusion_matrix.png").convert("RGB"))
    b = np.asarray(Image.open(trained / "plots_test" / "confusion_matrix.png").convert("RGB"))
    assert a.shape == b.shape and (a == b).mean() > 0.99


def test_test_under_two_processes_matches_one(trained):
    """Each rank predicts its half; rank 0 gathers, scores and writes --out."""
    r1 = detcore("test", "run.toml", "--checkpoint", "work/iter_80.pth", "--out", "p1.json", cwd=trained)
    r2 = detcore("test", "run.toml", "--checkpoint", "work/iter_80.pth", "--out", "p2.json", "--nproc", 2,
                 cwd=trained)
    assert "2 process(es)" in r2.stdout
    assert metrics_line(r2.stdout) == metrics_line(r1.stdout)
    assert json.loads((trained / "p2.json").read_text()) == json.loads((trained / "p1.json").read_text())


def test_test_refuses_class_mismatch(trained):
    """Issue 12 point 7: a test set whose classes differ from training's is an
    error naming both lists, before anything is predicted."""
    data = json.loads((trained / "shapes" / "val.json").read_text())
    for c in data["categories"]:
        if c["name"] == "ellipse":
            c["name"] = "circle"
    (trained / "val_renamed.json").write_text(json.dumps(data))
    r = detcore("test", "run.toml", "--checkpoint", "work/iter_80.pth", "--set",
                'data.val.ann_file="val_renamed.json"', cwd=trained, check=False)
    assert r.returncode == 1
    assert "['rectangle', 'ellipse', 'triangle']" in r.stderr
    assert "['rectangle', 'circle', 'triangle']" in r.stderr
    assert "Traceback" not in r.stderr

    # same names, other category ids: the mapping to ids drifted
    data = json.loads((trained / "shapes" / "val.json").read_text())
    for c in data["categories"]:
        c["id"] += 10
    for a in data["annotations"]:
        a["category_id"] += 10
    (trained / "val_renumbered.json").write_text(json.dumps(data))
    r = detcore("test", "run.toml", "--checkpoint", "work/iter_80.pth", "--set",
                'data.val.ann_file="val_renumbered.json"', cwd=trained, check=False)
    assert r.returncode == 1
    assert "[1, 2, 3]" in r.stderr and "[11, 12, 13]" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------
# detcore predict
# ----------------------------------------------------------------------


def test_predict_files_folders_globs_and_a_corrupt_image(trained):
    from detcore.visualize import class_color

    inputs = trained / "inputs"
    inputs.mkdir()
    for name in ("000000.jpg", "000001.jpg", "000002.jpg"):
        (inputs / name).write_bytes((trained / "shapes" / "val" / name).read_bytes())
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = detcore(
        "predict", "run.toml", "--checkpoint", "work/iter_80.pth",
        "inputs", "shapes/train/00000[3-4].*", "missing.png",
        "--out-dir", "pred", "--score-thr", 0.3, "--format", "png", "--batch-size", 2,
        cwd=trained, check=False,
    )
    # the corrupt and the missing inputs are reported, the others predicted
    assert r.returncode == 1
    assert "broken.jpg" in r.stderr and "missing.png" in r.stderr and "Traceback" not in r.stderr
    record = json.loads((trained / "pred" / "predictions.json").read_text())
    assert record["class_names"] == ["rectangle", "ellipse", "triangle"]
    assert sorted(Path(e["input"]).name for e in record["errors"]) == ["broken.jpg", "missing.png"]
    assert [Path(i["file"]).name for i in record["images"]] == [
        "000000.jpg", "000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"
    ]
    n_checked = 0
    for entry in record["images"]:
        drawn = Path(trained / entry["drawn"]) if not Path(entry["drawn"]).is_absolute() else Path(entry["drawn"])
        assert image_info(drawn) == ("PNG", (entry["width"], entry["height"])) == (
            "PNG", image_info(trained / entry["file"])[1]
        )
        for det in entry["detections"]:
            assert det["score"] >= 0.3 and det["class"] == record["class_names"][det["label"]]
        if entry["detections"]:
            # the last detection is drawn on top: its edge has its class colour
            last = entry["detections"][-1]
            size = (entry["width"], entry["height"])
            assert has_box_bottom_edge(drawn, last["box"], class_color(last["label"]), size)
            assert not has_box_bottom_edge(trained / entry["file"], last["box"], class_color(last["label"]), size)
            n_checked += 1
    assert n_checked >= 3  # the model found objects in most images


def test_predict_draws_each_label_on_a_filled_box(trained):
    import numpy as np
    from PIL import Image

    from detcore.visualize import class_color, text_color

    # A larger copy of a val image: labels are drawn on images of 96 px and more.
    (trained / "big").mkdir()
    with Image.open(trained / "shapes" / "val" / "000001.jpg") as im:
        im.resize((256, 256), Image.BILINEAR).save(trained / "big" / "big.png")
    detcore("predict", "run.toml", "--checkpoint", "work/iter_80.pth", "big/big.png", "--out-dir", "pred_big",
            "--format", "png", "--score-thr", 0.3, cwd=trained)
    entry = json.loads((trained / "pred_big" / "predictions.json").read_text())["images"][0]
    assert entry["detections"], "the model should find the shapes"
    best = max(entry["detections"], key=lambda d: d["score"])  # its label is drawn last, on top
    with Image.open(trained / entry["drawn"]) as im:
        drawn = np.asarray(im.convert("RGB")).astype(int)
    x1, y1 = (int(v) for v in best["box"][:2])
    x0 = max(0, min(x1, 256 - 60))
    window = drawn[max(0, y1 - 14) : y1 + 14, x0 : x0 + 20]
    filled = (window == class_color(best["label"])).all(-1).mean()
    # the outline alone covers ~1/14 of the window; the filled label box a third or more
    assert filled > 0.25, filled
    text = window.mean(-1) < 60 if text_color(class_color(best["label"])) == (0, 0, 0) else window.min(-1) > 190
    assert text.any()  # the label's text, in the contrasting colour


def test_predict_with_another_models_run_file_is_a_clear_error(trained):
    r = detcore("predict", "run.toml", "--checkpoint", "work/iter_80.pth", "shapes/val/000000.jpg",
                "--out-dir", "pred_bad", "--set", "model.num_classes=5", cwd=trained, check=False)
    assert r.returncode == 1
    assert "does not fit the model" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------
# browse-dataset, benchmark, analyze, plot
# ----------------------------------------------------------------------


def test_browse_dataset_draws_ground_truth(trained):
    from detcore.visualize import class_color

    detcore("browse-dataset", "run.toml", "--split", "val", "--out-dir", "browse", "-n", 4, "--format", "png",
            cwd=trained)
    gt = json.loads((trained / "shapes" / "val.json").read_text())
    cat_index = {c["id"]: i for i, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))}
    files = sorted((trained / "browse").iterdir())
    assert len(files) == 4
    for f in files:
        image_id = int(f.stem.split("_")[1])
        img = next(i for i in gt["images"] if i["id"] == image_id)
        assert image_info(f) == ("PNG", (img["width"], img["height"]))
        anns = [a for a in gt["annotations"] if a["image_id"] == image_id]
        drawn = [
            has_box_bottom_edge(f, (x, y, x + w, y + h), class_color(cat_index[a["category_id"]]),
                                (img["width"], img["height"]))
            for a in anns
            for x, y, w, h in [a["bbox"]]
        ]
        # every box is drawn in its class colour (one may be overdrawn where boxes cross)
        assert sum(drawn) >= max(1, len(anns) - 1), (f.name, drawn)


def test_benchmark_reports_throughput_and_percentiles(trained):
    r = detcore("benchmark", "run.toml", "--checkpoint", "work/iter_80.pth", "--warmup", 1, "--iters", 5,
                "--train-iters", 2, "--json", cwd=trained)
    report = json.loads(r.stdout)
    inf = report["inference"]
    assert inf["images_per_s"] > 0 and inf["batches"] == 5 and inf["image_size"] == [64, 64]
    lat = inf["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    tr = report["training"]
    assert tr["steps"] == 2 and tr["step_ms"] > tr["data_ms"] >= 0 and tr["batch_size"] == 8


def test_analyze_and_plot_a_real_run(trained):
    val = [rec for rec in read_scalars(trained / "work") if "bbox_mAP" in rec]
    r = detcore("analyze", "work", cwd=trained)
    assert re.search(rf"best bbox_mAP: +{val[-1]['bbox_mAP']:.4f} \(iteration 80\)", r.stdout), r.stdout
    assert re.search(r"best checkpoint: +\S*best_bbox_mAP\S*\.pth", r.stdout), r.stdout
    assert "time per iteration:" in r.stdout and "% of the iteration" in r.stdout
    r = detcore("plot", "work", "--keys", "loss,lr,bbox_mAP", "--out", "curves.png", cwd=trained)
    fmt, (w, h) = image_info(trained / "curves.png")
    assert fmt == "PNG" and (w, h) == (1500, 340)


# ----------------------------------------------------------------------
# export
# ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".pt"), ("onnx", ".onnx")])
def test_export_matches_eager(trained, fmt, suffix):
    import torch

    from detcore.data.image_io import read_image
    from detcore.engine.export import compare, run_exported
    from detcore.engine.inference import load_model
    from detcore.runfile import load_run

    out = trained / f"model{suffix}"
    r = detcore("export", "run.toml", "--checkpoint", "work/iter_80.pth", "--format", fmt, "--out", out.name,
                cwd=trained)
    assert "check against eager mode" in r.stdout
    info = json.loads(Path(str(out) + ".json").read_text())
    assert info["class_names"] == ["rectangle", "ellipse", "triangle"]

    # Independently of the command's own check: another image, eager vs exported.
    torch.set_num_threads(1)
    cwd = os.getcwd()
    os.chdir(trained)
    try:
        run = load_run("run.toml")
        model, _ = load_model(run, "work/iter_80.pth", torch.device("cpu"))
    finally:
        os.chdir(cwd)
    image = read_image(trained / "shapes" / "val" / "000005.jpg").float() / 255
    with torch.no_grad():
        eager = {k: v for k, v in model([image])[0].items()}
    exported = run_exported(out, fmt, image)
    assert len(eager["boxes"]) > 0
    check = compare(eager, exported)
    assert check.ok, check.summary()
    assert torch.allclose(eager["scores"].sort().values, exported["scores"].float().sort().values, atol=1e-5)
    if fmt == "torchscript":
        # docs/tools.md's loading snippet, as written, on this export ...
        snippet = doc_snippet("torchscript-snippet")
        shutil.copy(out, trained / "fcos.pt")
        r = subprocess.run([sys.executable, "-c", snippet], cwd=trained, env=env(), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "torch.Size([" in r.stdout
        # ... and the failure it warns of without `import torchvision`.
        bare = "\n".join(ln for ln in snippet.splitlines() if ln != "import torchvision" and not ln.startswith("import torchvision "))
        r = subprocess.run([sys.executable, "-c", bare], cwd=trained, env=env(), capture_output=True, text=True)
        assert r.returncode != 0 and "torchvision::" in r.stderr, r.stderr[-2000:]


def test_onnx_export_without_onnx_says_what_to_install(tmp_path, shapes_run):
    # An importable "onnx" that fails like an uninstalled package does.
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "onnx.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnx'\", name='onnx')\n"
    )
    (tmp_path / "run.toml").write_text(shapes_run(TRAIN))
    r = run_detcore("export", "run.toml", "--checkpoint", "missing.pth", "--format", "onnx", "--out", "m.onnx",
                    cwd=tmp_path, env=QUIET, plugin_paths=[tmp_path / "shadow"])
    assert r.returncode == 1, r.stderr
    assert "pip install 'detcore[onnx]'" in r.stderr and "Traceback" not in r.stderr
    assert "cannot be exported" not in r.stderr  # the model is not blamed
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------
# a mask model: segm results and mask RLEs
# ----------------------------------------------------------------------


def test_mask_model_segm_results_and_predicted_masks(trained, shapes_run):
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    run = shapes_run(
        TRAIN,
        work_dir="work_mask",
        model={  # another type: replaces the whole [model] table
            "type": "mask_rcnn", "num_classes": 3, "min_size": 64, "max_size": 64,
            "backbone": {"type": "tiny", "width": 16},
            "neck": {"type": "fpn", "out_channels": 64, "extra": "maxpool"},
            "detections_per_img": 10, "score_thresh": 0.0,
        },
        data={"train": {"with_masks": True}, "val": {"with_masks": True}},
        metrics=[{"type": "coco", "iou_types": ["bbox", "segm"]}],
    )
    (trained / "mask.toml").write_text(run)
    detcore("train", "mask.toml", "--set", "train.max_iters=2", "--set", "train.val_interval=1000",
            "--set", "checkpoint.interval=2", "--no-validate", cwd=trained)
    r = detcore("test", "mask.toml", "--checkpoint", "work_mask/iter_2.pth", "--out", "mask_preds.json",
                cwd=trained)
    printed = metrics_line(r.stdout)
    gt = COCO(str(trained / "shapes" / "val.json"))
    ev = COCOeval(gt, gt.loadRes(str(trained / "mask_preds.segm.json")), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert json.loads((trained / "mask_preds.segm.json").read_text())  # masks were predicted
    assert ev.stats[0] == pytest.approx(printed["segm_mAP"], abs=1e-4)
    assert ev.stats[1] == pytest.approx(printed["segm_mAP_50"], abs=1e-4)

    detcore("predict", "mask.toml", "--checkpoint", "work_mask/iter_2.pth", "shapes/val/000000.jpg",
            "--out-dir", "mask_pred", "--score-thr", 0, cwd=trained)
    entry = json.loads((trained / "mask_pred" / "predictions.json").read_text())["images"][0]
    assert entry["detections"]
    for det in entry["detections"]:
        m = mask_util.decode({"size": det["mask_rle"]["size"], "counts": det["mask_rle"]["counts"].encode()})
        assert m.shape == (entry["height"], entry["width"])


def test_test_rejects_show_score_thr_outside_0_1(tmp_path, capsys, shapes_run):
    """Checked before the run file is read: exit 2 with a clear message."""
    from detcore.cli.main import main

    (tmp_path / "run.toml").write_text(shapes_run(TRAIN))
    code = main(["test", str(tmp_path / "run.toml"), "--checkpoint", str(tmp_path / "none.pth"),
                 "--show-dir", str(tmp_path / "show"), "--show-score-thr", "1.5"])
    assert code == 2
    assert "--show-score-thr must be in [0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "show").exists()
