"""detcore-hooks as a plugin: registration, light import, run-file checks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from detcore.catalog import Catalog
from detcore.errors import DetcoreError, RunFileError
from detcore.plugins import get_plugin_manager
from detcore.runfile.components import validate_component

HOOKS = ["check_finite", "early_stopping", "ema", "freeze", "profiler", "tensorboard", "visualize"]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_plugin_manager(get_plugin_manager())


def validate(catalog, table):
    return validate_component(catalog, "runner_hook", table, "hooks[0]")


def test_entry_point_registers_every_hook(catalog):
    assert set(HOOKS) <= set(catalog.names("runner_hook"))
    for name in HOOKS:
        comp = catalog.get("runner_hook", name)
        assert (comp.plugin, comp.distribution) == ("hooks", "detcore-hooks")


def test_plugin_module_does_not_import_torch():
    code = (
        "import sys, detcore_hooks.plugin as p; p.detcore_runner_hooks(); "
        "heavy = [m for m in ('torch', 'torchvision', 'tensorboard', 'tqdm') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"type": "ema", "momentum": 1.5}, "hooks[0].momentum", "(0, 1]"),
        ({"type": "ema", "momentum": "high"}, "hooks[0].momentum", "expected a number"),
        ({"type": "ema", "momentun": 0.1}, "hooks[0].momentun", "did you mean 'momentum'"),
        ({"type": "early_stopping"}, "hooks[0]", "needs argument 'metric'"),
        ({"type": "early_stopping", "metric": "bbox_mAP", "mode": "maximum"}, "hooks[0].mode", "max"),
        ({"type": "early_stopping", "metric": "bbox_mAP", "patience": 0}, "hooks[0].patience", "> 0"),
        ({"type": "freeze", "prefixes": []}, "hooks[0].prefixes", "at least one"),
        ({"type": "freeze", "prefixes": ["backbone"], "from_epoch": 3, "until_epoch": 2}, "hooks[0].until_epoch", "after from_epoch"),
        ({"type": "visualize", "score_thr": 2.0}, "hooks[0].score_thr", "[0, 1]"),
        ({"type": "profiler", "active": 0}, "hooks[0].active", "> 0"),
        ({"type": "progress", "mode": "fancy"}, "hooks[0].mode", "lines"),
        ({"type": "emma"}, "hooks[0].type", "did you mean 'ema'"),
    ],
)
def test_bad_tables_name_the_key(catalog, table, key, words):
    with pytest.raises(RunFileError) as err:
        validate(catalog, table)
    assert err.value.key == key
    assert words in str(err.value)


def test_good_tables_pass(catalog):
    for table in [
        {"type": "ema", "momentum": 0.0002, "warmup_iters": 100},
        {"type": "early_stopping", "metric": "bbox_mAP", "mode": "min", "patience": 2, "min_delta": 0.01},
        {"type": "freeze", "prefixes": ["backbone"], "until_epoch": 2},
        {"type": "tensorboard", "interval": 5},
        {"type": "visualize", "num_images": 2},
        {"type": "check_finite"},
        {"type": "profiler", "wait": 1, "warmup": 1, "active": 2},
    ]:
        assert validate(catalog, table).distribution == "detcore-hooks"
    # progress is the core's own (every run has one; detcore-hooks used to provide it)
    assert validate(catalog, {"type": "progress", "mode": "lines", "interval": 5}).distribution == "detcore"


def test_blocked_package_names_the_distribution():
    blocked = Catalog.from_plugin_manager(get_plugin_manager(["no:hooks"]))
    assert "ema" not in blocked.names("runner_hook")
    with pytest.raises(RunFileError) as err:
        validate(blocked, {"type": "ema"})
    assert "pip install detcore-hooks" in str(err.value)
    assert err.value.key == "hooks[0].type"


def test_missing_tensorboard_names_the_extra(catalog, monkeypatch):
    # A None entry in sys.modules makes `import tensorboard` fail as if the
    # package were not installed.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(RunFileError) as err:
        validate(catalog, {"type": "tensorboard"})
    assert "pip install 'detcore-hooks[tensorboard]'" in str(err.value)
    with pytest.raises(DetcoreError) as err:
        catalog.build("runner_hook", {"type": "tensorboard"}, path="hooks[0]")
    assert "pip install 'detcore-hooks[tensorboard]'" in str(err.value)
