"""visualize and profiler in a real training run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detcore.visualize import CAPTION_BACKGROUND, class_color

sys.path.insert(0, str(Path(__file__).parent / "hooks_plugins"))
from hooks_runs import SIZE, VAL, train, write_run  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vis")
    hooks = [
        {"type": "visualize", "num_images": 3, "score_thr": 0.0},
        {"type": "profiler", "wait": 1, "warmup": 1, "active": 1},
    ]
    val = {**VAL, "max_objects": 1}
    path = write_run(tmp, hooks, data={"val": val})
    assert train(path) == 0
    return tmp / "run", val


def test_visualize_writes_ground_truth_and_predictions(work):
    from detcore.data.synthetic import SyntheticDataset

    work, val = work
    assert sorted(p.name for p in (work / "vis").iterdir()) == ["epoch_001", "epoch_002"]
    files = sorted((work / "vis" / "epoch_002").glob("*.png"))
    assert [f.name for f in files] == ["0.png", "1.png", "2.png"]
    dataset = SyntheticDataset(val["num_images"], (SIZE, SIZE), val["num_classes"], max_objects=1, seed=val["seed"])
    for f in files:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            png = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        strip = png.shape[1] - SIZE  # the caption strip above both panels
        assert 8 <= strip <= 30 and png.shape == (3, SIZE + strip, 2 * SIZE + 4)
        for cap in (png[:, :strip, :SIZE], png[:, :strip, SIZE + 4 :]):
            # a dark strip with white caption text in it
            dark = (cap == torch.tensor(CAPTION_BACKGROUND, dtype=torch.uint8).view(3, 1, 1)).all(0)
            assert dark.float().mean() > 0.5 and (cap.float().min(0).values > 190).any()
        gt_panel, pred_panel = png[:, strip:, :SIZE], png[:, strip:, SIZE + 4 :]
        image, target = dataset[int(f.stem)]
        image = image.as_subclass(torch.Tensor)
        x1, y1, x2, y2 = target["boxes"][0].round().int().tolist()
        colour = torch.tensor(class_color(int(target["labels"][0]))).view(3, 1)
        # The ground-truth box's bottom edge is drawn in its class colour ...
        bottom = gt_panel[:, min(y2, SIZE - 1), x1 + 1 : x2 - 1]
        assert (bottom == colour).all()
        # ... and the image far from any box is left as it was.
        changed = (gt_panel != image).any(0)
        assert changed.any() and changed.float().mean() < 0.5
        assert (pred_panel != image).any()  # predicted boxes drawn (score_thr 0)


def test_profiler_writes_a_chrome_trace(work):
    work, _ = work
    traces = list((work / "profiler").glob("trace_iter*.json"))
    assert [t.name for t in traces] == ["trace_iter3.json"]  # wait 1 + warmup 1 + active 1
    trace = json.loads(traces[0].read_text())
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert any(n.startswith("ProfilerStep#") for n in names)
    assert "aten::conv2d" in names
