"""The Python API (``from detcore import Detector, train, test``): light to
import, trains and tests in this process, predicts what ``detcore predict``
writes, takes every documented image type, and raises DetcoreError subclasses;
docs/python.md's snippets run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import detcore
from detcore.testing import run_detcore

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "python.md"


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def test_import_is_light_and_test_is_not_collected_by_pytest():
    code = (
        "import sys\nfrom detcore import Detector, Prediction, TrainResult, train, test\n"
        "print('torch' in sys.modules, test.__test__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("config", ["demo_shapes.toml", "retinanet_r50_fpn_1x_coco.toml"])
def test_the_run_file_a_checkpoint_carries_builds_the_same_model(config):
    """Detector.from_checkpoint rebuilds the model from the resolved run file
    saved in the checkpoint: it must give the same architecture as the
    original (defaults a detector sets for its backbone included)."""
    from detcore.engine.build import build_model
    from detcore.models.pretrained import skip_pretrained
    from detcore.runfile import load_run, resolved_dict
    from detcore.runfile.toml_writer import dumps

    run = load_run(REPO / "configs" / config, data_splits=())
    saved = load_run("saved.toml", text=dumps(resolved_dict(run.cfg, run.catalog)), data_splits=())
    with skip_pretrained():
        shapes = [{k: tuple(v.shape) for k, v in build_model(r).state_dict().items()} for r in (run, saved)]
    assert shapes[0] == shapes[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes_run):
    """Shapes data, a run file and ``detcore.train`` run in this process."""
    pytest.importorskip("detcore_coco", reason="uses the coco dataset and metric of detcore-coco")
    from detcore_coco.shapes import make_shapes

    root = tmp_path_factory.mktemp("api")
    make_shapes(str(root / "shapes"), train=16, val=6, size=64, seed=0)
    (root / "run.toml").write_text(shapes_run(
        data={"batch_size": 4}, optimizer={"lr": 0.01},
        train={"max_iters": 8, "log_interval": 4, "val_interval": 8},
        checkpoint={"interval": 8, "keep": 3, "save_best": "bbox_mAP"},
    ))
    cwd = os.getcwd()
    os.chdir(root)  # the run file's paths are relative to where detcore runs
    try:
        result = detcore.train("run.toml")
    finally:
        os.chdir(cwd)
    return root, result


@pytest.mark.slow
def test_train_then_test_from_python(trained, capsys):
    root, result = trained
    assert isinstance(result, detcore.TrainResult)
    assert result.exit_status == 0 and not result.interrupted and result.iterations == 8
    assert result.work_dir == Path("work")
    assert result.checkpoint == Path("work/iter_8.pth") and (root / result.checkpoint).is_file()
    assert result.best_checkpoint is not None and (root / result.best_checkpoint).is_file()
    assert set(result.metrics) >= {"bbox_mAP", "bbox_mAP_50", "bbox_AR@100"}
    cwd = os.getcwd()
    os.chdir(root)
    try:
        capsys.readouterr()
        metrics = detcore.test("run.toml", checkpoint=result.checkpoint, out="preds.json", show_dir="show")
        shown = capsys.readouterr().out
        quiet = detcore.test("run.toml", result.checkpoint, verbose=False)
        assert capsys.readouterr().out == ""
    finally:
        os.chdir(cwd)
    # The same weights on the same images: test() reproduces the last validation.
    assert metrics == pytest.approx(result.metrics) and quiet == metrics
    assert "on data.val (6 images, 1 process(es), cpu)" in shown and "bbox_mAP" in shown
    records = json.loads((root / "preds.json").read_text())
    assert records and {r["category_id"] for r in records} <= {1, 2, 3}
    assert len(list((root / "show").glob("*.jpg"))) == 6


@pytest.mark.slow
def test_predictions_equal_detcore_predict_json(trained):
    root, result = trained
    files = [f"shapes/val/{i:06d}.jpg" for i in range(5)]
    proc = run_detcore("predict", "run.toml", "--checkpoint", result.checkpoint, *files, "--out-dir", "cli_pred",
                       "--score-thr", 0.05, "--batch-size", 2, "--no-draw", cwd=root, env={"PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    cli = json.loads((root / "cli_pred" / "predictions.json").read_text())

    det = detcore.Detector.from_checkpoint(root / result.checkpoint, device="cpu", batch_size=2)
    preds = det.predict([str(root / f) for f in files], score_thr=0.05)
    assert det.class_names == ("rectangle", "ellipse", "triangle") == tuple(cli["class_names"])
    assert len(preds) == len(cli["images"]) == 5
    n = 0
    for pred, entry, name in zip(preds, cli["images"], files):
        assert entry["file"] == name and pred.path == str(root / name)
        mine = pred.to_dict()
        assert mine["file"] == str(root / name)
        assert (mine["height"], mine["width"]) == (entry["height"], entry["width"]) == (64, 64)
        assert mine["detections"] == entry["detections"]
        n += len(mine["detections"])
    assert n > 0  # the comparison compared something


@pytest.mark.slow
def test_every_image_type_gives_the_same_prediction(trained):
    import numpy as np
    import torch
    from PIL import Image

    root, result = trained
    det = detcore.Detector.from_checkpoint(root / result.checkpoint, batch_size=1)
    path = root / "shapes" / "val" / "000003.jpg"
    [ref] = det.predict(path, score_thr=0.05)
    assert len(ref) > 0 and ref.path == str(path)
    pil = Image.open(path)
    arr = np.asarray(pil)
    chw = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    singles = [pil, pil.convert("RGBA"), arr, chw, chw.float() / 255]
    for image in singles:
        [pred] = det.predict(image, score_thr=0.05)
        assert pred.path is None
        assert torch.equal(pred.boxes, ref.boxes) and torch.equal(pred.labels, ref.labels), type(image)
        assert torch.allclose(pred.scores, ref.scores)
    # A batch tensor / array is N images; a list keeps its order.
    other = root / "shapes" / "val" / "000004.jpg"
    [ref2] = det.predict(other, score_thr=0.05)
    for batch in (torch.stack([chw, chw]), np.stack([arr, arr]), [path, other, pil]):
        preds = det.predict(batch, score_thr=0.05)
        expected = [ref, ref] if not isinstance(batch, list) else [ref, ref2, ref]
        assert [p.boxes.tolist() for p in preds] == [e.boxes.tolist() for e in expected]
    # Thresholds filter; boxes are in the image's pixels.
    assert all(s >= 0.3 for p in det.predict([path, other], score_thr=0.3) for s in p.scores.tolist())
    assert float(ref.boxes.max()) <= 64 and float(ref.boxes.min()) >= 0


@pytest.mark.slow
def test_prediction_to_dict_coco_and_drawing(trained, tmp_path):
    from PIL import Image

    root, result = trained
    det = detcore.Detector.from_checkpoint(root / result.checkpoint)
    assert det.cat_ids == (1, 2, 3)  # the shapes' category ids, from the checkpoint
    [pred] = det.predict(root / "shapes" / "val" / "000001.jpg", score_thr=0.05)
    assert len(pred) > 0
    coco = pred.to_coco(image_id=7)
    assert len(coco) == len(pred)
    for rec, box, label, score in zip(coco, pred.boxes.tolist(), pred.labels.tolist(), pred.scores.tolist()):
        x1, y1, x2, y2 = box
        assert rec["image_id"] == 7 and rec["category_id"] == label + 1
        assert rec["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1]) and rec["score"] == pytest.approx(score)
    assert pred.to_coco(0, cat_ids=[10, 20, 30])[0]["category_id"] == 10 * (pred.labels[0].item() + 1)
    assert pred.names == [pred.class_names[i] for i in pred.labels.tolist()]
    out = pred.save(tmp_path / "drawn.png")
    with Image.open(out) as im:
        assert im.size == (64, 64)
        drawn = im.convert("RGB").tobytes()
    with Image.open(root / "shapes" / "val" / "000001.jpg") as im:
        assert drawn != im.convert("RGB").tobytes()
    assert tuple(pred.draw().shape) == (3, 64, 64)
    assert "Prediction(64x64: [" in repr(pred)


@pytest.mark.slow
def test_bad_inputs_raise_detcore_errors(trained, tmp_path):
    import numpy as np
    import torch

    root, result = trained
    det = detcore.Detector.from_checkpoint(root / result.checkpoint)
    for bad, words in (
        (42, "cannot use a int as an image"),
        (np.zeros((3, 64, 64), np.uint8), "[H, W, 3]"),
        (torch.zeros(64, 64, 3, dtype=torch.uint8), "[3, H, W]"),
        (torch.full((3, 8, 8), 2.0), "0..1"),
    ):
        with pytest.raises(detcore.DetcoreError, match=re.escape(words)):
            det.predict(bad)
    with pytest.raises(detcore.ImageReadError, match="not found"):
        det.predict(tmp_path / "missing.jpg")
    with pytest.raises(detcore.DetcoreError, match="score_thr"):
        det.predict(root / "shapes" / "val" / "000001.jpg", score_thr=2)
    # A plain state dict has no run file: say how to give one, and it works with one.
    state = tmp_path / "weights.pth"
    torch.save(det.model.state_dict(), state)
    with pytest.raises(detcore.CheckpointError, match=r"run_file="):
        detcore.Detector.from_checkpoint(state)
    plain = detcore.Detector.from_checkpoint(state, run_file=root / "run.toml")
    assert plain.class_names == ("0", "1", "2")  # no class names in a state dict
    with pytest.raises(detcore.RunFileError, match="did you mean 'lr'"):
        detcore.train(root / "run.toml", overrides={"optimizer.lrr": 0.1})
    with pytest.raises(detcore.RunFileError, match="file not found"):
        detcore.test(tmp_path / "nope.toml", checkpoint=state)


@pytest.mark.slow
def test_docs_python_md_runs_as_written(tmp_path):
    """Every code block of docs/python.md, in order, in a copy of the
    repository's configs: the bash block first, then the Python blocks as
    one script."""
    pytest.importorskip("detcore_coco", reason="the snippets use detcore-coco's make-shapes and metric")
    text = DOC.read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", text, flags=re.S | re.M)
    kinds = [k for k, _ in blocks]
    assert kinds[0] == "python" and kinds[1] == "bash" and set(kinds[2:]) == {"python"}, kinds
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    env = {**_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    setup = subprocess.run(["bash", "-euc", blocks[1][1]], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert setup.returncode == 0, setup.stderr
    script = "\n".join(body for kind, body in blocks if kind == "python")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "work_dirs/python_demo/iter_4.pth" in out
    assert re.search(r"^bbox_mAP \d\.\d{4}$", out, re.M)
    assert "did you mean 'lr'" in out and "True" in out.splitlines()
    assert (tmp_path / "pred_000002.jpg").is_file()
