"""Fixtures shared by detcore's own tests."""

from __future__ import annotations

import sys

import pytest


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
