"""Fixtures shared by detcore's own tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Tests never download weights: set before any test imports huggingface_hub,
# which reads it once (scripts/test.sh sets it too, for the plugins' tests).
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests that train in-process use one intra-op thread: the machine has
    two cores and oversubscribing them makes torch many times slower. Tests
    that never import torch are left alone (and do not import it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def catalog():
    """The catalog of detcore's built-in plugins only (no entry points)."""
    from detcore.catalog import Catalog
    from detcore.plugins import get_plugin_manager

    return Catalog.from_plugin_manager(get_plugin_manager(entrypoints=False))


def _shapes_run(*layers: dict, **changes) -> str:
    import copy

    from detcore.runfile.toml_writer import dumps
    from detcore.testing import tiny_run

    shapes = {
        "work_dir": "work",
        "model": {
            "backbone": {"type": "tiny", "width": 16},
            "neck": {"type": "fpn", "out_channels": 64, "extra": "p6p7"},
            "head": {"type": "fcos_head", "num_convs": 1},
        },
        "data": {
            "train": {"type": "coco", "ann_file": "shapes/train.json", "img_dir": "shapes/train"},
            "val": {"type": "coco", "ann_file": "shapes/val.json", "img_dir": "shapes/val"},
        },
        "metrics": [{"type": "coco"}],
    }
    return dumps(tiny_run(shapes, *map(copy.deepcopy, layers), **changes))


@pytest.fixture(scope="session")
def shapes_run():
    """``shapes_run(*layers, **changes) -> str``: the TOML text of a tiny
    FCOS (``detcore.testing.tiny_run``'s, with an FPN and a one-conv head)
    trained on detcore-coco's ``make-shapes`` data in ``./shapes`` and
    evaluated with its COCO metric, work dir ``work``; ``layers`` and
    ``changes`` are merged in as ``tiny_run`` merges them."""
    return _shapes_run


def _offline_torch_home(home: Path):
    """``home`` as ``$TORCH_HOME``, its empty ``hub/checkpoints`` yielded for
    the test to fill, and no network: a download attempt fails the way it
    does on an offline machine."""
    import torch

    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(home))
    mp.setattr(torch.hub, "_hub_dir", None)

    def offline(url, *args, **kwargs):
        raise OSError(f"[Errno 101] Network is unreachable: {url}")

    mp.setattr(torch.hub, "download_url_to_file", offline)
    try:
        yield checkpoints
    finally:
        mp.undo()


@pytest.fixture()
def torch_hub(tmp_path):
    """An empty, offline ``$TORCH_HOME/hub/checkpoints`` for one test, where
    torchvision's weight loader looks for files (:func:`_offline_torch_home`)."""
    yield from _offline_torch_home(tmp_path / "torch_home")


@pytest.fixture(scope="module")
def module_torch_hub(tmp_path_factory):
    """:func:`torch_hub` shared by a module's tests: a file written once
    (a large detector's weights) is there for the tests after it."""
    yield from _offline_torch_home(tmp_path_factory.mktemp("torch_home"))
