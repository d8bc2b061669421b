"""Commands that need no dataset (predict, export) do not check dataset tables."""

from __future__ import annotations

import pytest

from detcore.errors import RunFileError
from detcore.runfile import load_run

RUN = """
[model]
type = "fcos"
num_classes = 2
backbone = { type = "tiny" }
neck = { type = "fpn", out_channels = 32 }

[data.train]
type = "coco"
ann_file = "missing/train.json"
img_dir = "missing/train"

[train]
max_iters = 2
"""


def test_dataset_tables_are_checked_only_for_the_splits_asked(tmp_path, monkeypatch):
    pytest.importorskip("detcore_coco")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(RUN)
    with pytest.raises(RunFileError) as err:
        load_run("run.toml")
    assert err.value.key and err.value.key.startswith("data.train")
    run = load_run("run.toml", data_splits=())
    assert run.cfg.model["type"] == "fcos"
