"""What validation during training logs: each metric's own ``summary``
(pycocotools' 12 lines for the ``coco`` metric, as ``detcore test`` prints
them), the name/value table for a metric without one, on the console and in
the log file; ``scalars.jsonl`` keeps every number."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import detcore
from detcore.testing import DetcoreTester, read_scalars, run_detcore, tiny_run, write_runfile

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"

# pycocotools' summary line: " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.000"
_COCO_LINE = re.compile(
    r"^ (Average Precision  \(AP\)|Average Recall     \(AR\)) @\[ IoU=(\S+)\s*\| area=\s*(\w+) \| maxDets=\s*(\d+) \] = (-?\d\.\d{3})$",
    re.M,
)
# The keys of the coco metric's 12 numbers, in pycocotools' order.
_BBOX_KEYS = [
    "bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l",
    "bbox_AR@1", "bbox_AR@10", "bbox_AR@100", "bbox_AR_s@100", "bbox_AR_m@100", "bbox_AR_l@100",
]


def _validations(text: str) -> list[str]:
    """The text after each ``validation after ...`` line, up to the next log line."""
    parts = re.split(r"^.* I validation after .*$", text, flags=re.M)[1:]
    return [re.split(r"^\d\d-\d\d \d\d:\d\d:\d\d ", part[1:], maxsplit=1, flags=re.M)[0] for part in parts]


@pytest.mark.slow  # a real `detcore train` subprocess
def test_coco_validation_logs_pycocotools_summary(tmp_path, shapes_run):
    pytest.importorskip("detcore_coco", reason="uses the coco dataset and metric of detcore-coco")
    from detcore_coco.shapes import make_shapes

    make_shapes(str(tmp_path / "shapes"), train=8, val=4, size=64, seed=0)
    (tmp_path / "run.toml").write_text(shapes_run(
        optimizer={"lr": 0.01}, train={"max_iters": 4, "log_interval": 2, "val_interval": 2},
    ))
    proc = run_detcore("train", "run.toml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    vals = read_scalars(tmp_path / "work", "val")
    assert [v["iter"] for v in vals] == [2, 4]
    log = next((tmp_path / "work").glob("*.log")).read_text()
    for shown in (proc.stdout, log):
        blocks = _validations(shown)
        assert len(blocks) == 2, shown
        for block, record in zip(blocks, vals):
            lines = _COCO_LINE.findall(block)
            assert [(iou, area, dets) for _, iou, area, dets, _ in lines] == [
                ("0.50:0.95", "all", "100"), ("0.50", "all", "100"), ("0.75", "all", "100"),
                ("0.50:0.95", "small", "100"), ("0.50:0.95", "medium", "100"), ("0.50:0.95", "large", "100"),
                ("0.50:0.95", "all", "1"), ("0.50:0.95", "all", "10"), ("0.50:0.95", "all", "100"),
                ("0.50:0.95", "small", "100"), ("0.50:0.95", "medium", "100"), ("0.50:0.95", "large", "100"),
            ]
            # The numbers are the ones scalars.jsonl holds for this validation.
            assert [float(v) for *_, v in lines] == [pytest.approx(record[k], abs=5e-4) for k in _BBOX_KEYS]
            assert block.startswith("bbox:\n Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]")
            # Not also the generic table.
            assert "bbox_mAP" not in block
    # The shapes' objects are all small: pycocotools' -1 for the empty area ranges.
    assert vals[-1]["bbox_mAP_l"] == -1.0
    # docs/training.md shows this output as it is, but for the numbers.
    doc = DOC.read_text().split("<!-- coco-validation-log -->\n", 1)[1].split("```\n", 1)[1].split("  ```", 1)[0]
    header = re.findall(r"^.* I validation after .*$", proc.stdout, flags=re.M)[-1]
    shown = header + "\n" + _validations(proc.stdout)[-1].rstrip("\n")
    numbers = re.compile(r"\d+(\.\d+)?")
    assert numbers.sub("N", "\n".join(line[2:] for line in doc.splitlines())) == numbers.sub("N", shown)


class ShoutingMetric:
    """A metric with its own summary."""

    def evaluate(self, predictions, dataset):
        return {"shout_images": float(len(predictions))}

    def summary(self, results):
        return f"SHOUT: {int(results['shout_images'])} IMAGES"


class BrokenSummaryMetric:
    """A metric whose summary raises: the run goes on, showing its numbers."""

    def evaluate(self, predictions, dataset):
        return {"broken_count": 7.0}

    def summary(self, results):
        raise KeyError("no_such_key")


@detcore.hookimpl
def detcore_metrics():
    return {"shouting": ShoutingMetric, "broken_summary": BrokenSummaryMetric}


def test_each_metric_shows_its_own_summary_or_the_generic_table(tmp_path):
    tester = DetcoreTester(tmp_path)
    tester.register_test_components()
    tester.register(sys.modules[__name__], "validation_log_test")
    run = tiny_run(
        data={"val": {"type": "synthetic", "num_images": 3, "image_size": 64, "num_classes": 3}},
        train={"max_iters": 2, "val_interval": 1},
        metrics=[{"type": "scripted", "values": [0.25, 0.5]}, {"type": "shouting"}, {"type": "broken_summary"}],
    )
    result = tester.train(run)
    log = next(result.work_dir.glob("*.log")).read_text()
    blocks = _validations(log)
    assert len(blocks) == 2
    for block, score in zip(blocks, ("0.2500", "0.5000")):
        lines = block.splitlines()
        # The scripted metric has no summary: its name/value table, in its order.
        assert re.fullmatch(rf"  score\s+{score}", lines[0]) and re.fullmatch(r"  images\s+3\.0000", lines[1])
        assert "SHOUT: 3 IMAGES" in lines
        assert "(BrokenSummaryMetric.summary failed: KeyError: 'no_such_key'; its numbers:)" in lines
        assert "  broken_count  7.0000" in lines
        # Each metric's table once; the other metrics' numbers are not in it.
        assert block.count("score") == 1 and "shout_images" not in block
    # scalars.jsonl is unchanged: every metric's numbers, merged.
    vals = read_scalars(result.work_dir, "val")
    assert [v["score"] for v in vals] == [0.25, 0.5]
    assert all(v["shout_images"] == 3.0 and v["broken_count"] == 7.0 and v["images"] == 3 for v in vals)


def test_detcore_test_prints_the_same_tables(tmp_path):
    """``detcore test`` and validation use one formatting: what the run
    logged for its last validation, ``detcore test`` prints for the same
    checkpoint (plus its one line of every number)."""
    tester = DetcoreTester(tmp_path)
    tester.register_test_components()
    tester.register(sys.modules[__name__], "validation_log_test")
    run = tiny_run(
        data={"val": {"type": "synthetic", "num_images": 3, "image_size": 64, "num_classes": 3}},
        train={"max_iters": 2, "val_interval": 2}, checkpoint={"interval": 2, "keep": 1},
        metrics=[{"type": "shouting"}, {"type": "broken_summary"}],
    )
    result = tester.train(run)
    logged = _validations(next(result.work_dir.glob("*.log")).read_text())[-1].rstrip("\n")
    write_runfile(tmp_path / "run.toml", run)
    out = tester.main("test", "run.toml", "--checkpoint", str(result.work_dir / "iter_2.pth"))
    assert out.ret == 0, out.out + out.err
    assert logged + "\nmetrics: shout_images=3.0000 broken_count=7.0000" in out.out
