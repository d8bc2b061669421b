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
