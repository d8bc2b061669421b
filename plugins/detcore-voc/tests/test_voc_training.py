"""A short real training run on BCCD with the ``voc`` dataset and metric,
through detcore.testing (in-process, CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from detcore_voc import plugin

from detcore.testing import run_detcore

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bccd.toml"
BCCD = Path(__file__).resolve().parents[4] / "shared" / "data" / "bccd"

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning"),
]


@pytest.mark.slow
@pytest.mark.skipif(not BCCD.is_dir(), reason="shared BCCD data not present")
def test_bccd_example_trains_and_reports_voc_map(detcore_tester):
    # The example run file, pointed at the data wherever the checkout is and
    # cut down to two iterations and one validation at 96 pixels.
    detcore_tester.register(plugin, "voc", distribution="detcore-voc")
    root = str(BCCD)
    overrides = [
        f"data.train.root='{root}'",
        f"data.val.root='{root}'",
        f"data.test.root='{root}'",
        "data.workers=0",
        "data.batch_size=2",
        "device='cpu'",
        f"work_dir='{detcore_tester.path / 'work'}'",
        "train={ max_iters = 2, val_interval = 2 }",
        "lr_schedule={ type = 'constant' }",
        "checkpoint={ interval = 2, keep = 1 }",
        "model.min_size=96",
        "model.max_size=128",
        "data.val.transforms=[{ type = 'resize', size = 96, max_size = 128 }]",
        "data.train.transforms=[{ type = 'resize', size = 96, max_size = 128 }]",
    ]
    result = detcore_tester.train(EXAMPLE, overrides)
    dataset = result.assert_built("dataset", "voc:voc")
    assert dataset.class_names == ["Platelets", "RBC", "WBC"]
    result.assert_built("metric", "voc")
    final = [s for s in result.scalars() if "voc_mAP" in s][-1]
    assert 0.0 <= final["voc_mAP"] <= 1.0 and 0.0 <= final["voc_mAP_11pt"] <= 1.0
    assert {"voc_AP/RBC", "voc_AP/WBC", "voc_AP/Platelets"} <= set(final)
    # Validation during training logs the same per-class table.
    log = next(result.work_dir.glob("*.log")).read_text()
    assert re.search(
        r" I validation after iteration 2 \(.*\):\nVOC AP @ IoU=0\.50\n  class +AP\n  Platelets +\d\.\d{3}\n", log
    ), log
    # `detcore test` prints the voc metric's own per-class table.
    sets = [arg for o in overrides for arg in ("--set", o)]
    ckpt = result.work_dir / "iter_2.pth"
    test = detcore_tester.main("test", str(EXAMPLE), "--checkpoint", str(ckpt), "--split", "val", *sets)
    assert test.ret == 0, test.err
    assert re.search(r"VOC AP @ IoU=0\.50\n  class +AP\n  Platelets +\d\.\d{3}\n", test.out), test.out
    assert "\n  RBC " in test.out and "\n  mAP 11pt " in test.out and "metrics: voc_mAP=" in test.out
    assert "Average Precision" not in test.out


REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "bccd").is_dir(), reason="shared BCCD data not present")
def test_readme_check_command_from_the_repository_root():
    proc = run_detcore("config", "check", "plugins/detcore-voc/examples/bccd.toml", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "OK (detector 'fcos', data: train, val, test, 1 metric(s), 0 hook(s))" in proc.stdout
    assert "detcore config check plugins/detcore-voc/examples/bccd.toml" in (REPO / "plugins/detcore-voc/README.md").read_text()
