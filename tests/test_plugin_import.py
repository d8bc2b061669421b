"""Where plugin modules are imported from (issue 16, item 2): a run file's
``plugins`` entry exactly next to the run file, ``-p MODULE`` from the
current directory or installed modules, ``sys.path`` never changed, nothing
shadowed, and modules that are not detcore plugins refused."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detcore.errors import PluginError, RunFileError
from detcore.plugins import get_plugin_manager
from detcore.runfile import load_run
from detcore.testing import run_detcore, tiny_run, write_runfile

PLUGIN = """\
from detcore import hookimpl

@hookimpl
def detcore_before_run(runner):
    pass
"""


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    """``runs/`` (run files and their plugins) and ``cwd/`` (the current
    directory); every module a test imports from them is forgotten after."""
    runs, cwd = tmp_path / "runs", tmp_path / "cwd"
    runs.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = set(sys.modules)
    yield runs, cwd
    for name in set(sys.modules) - before:
        mod_file = getattr(sys.modules[name], "__file__", None) or ""
        if mod_file.startswith(str(tmp_path)):
            del sys.modules[name]


def write_run(folder: Path, *plugins: str) -> Path:
    return write_runfile(folder / "run.toml", tiny_run(plugins=list(plugins)))


def test_run_file_plugin_is_loaded_from_next_to_it_without_touching_sys_path(tree):
    runs, _ = tree
    (runs / "fx_next_to_run.py").write_text(PLUGIN)
    before = list(sys.path)
    run = load_run(write_run(runs, "fx_next_to_run"), pm=get_plugin_manager(entrypoints=False))
    assert sys.path == before
    assert run.pm.has_plugin("fx_next_to_run")
    assert run.pm.distribution_of("fx_next_to_run") == ("local module", str(runs / "fx_next_to_run.py"))


def test_a_torchvision_py_next_to_the_run_file_does_not_shadow_torchvision(tmp_path):
    # A fresh process: torchvision is not imported yet when the run file is
    # loaded, as in `detcore train`.
    runs, cwd = tmp_path / "runs", tmp_path / "cwd"
    runs.mkdir()
    cwd.mkdir()
    (runs / "fx_shadow_plugin.py").write_text(PLUGIN)
    (runs / "torchvision.py").write_text("raise SystemExit('the torchvision.py next to the run file ran')\n")
    run_file = write_run(runs, "fx_shadow_plugin")
    code = textwrap.dedent(
        """
        import sys
        before = list(sys.path)
        from detcore.runfile import load_run
        run = load_run(sys.argv[1])
        assert run.pm.has_plugin("fx_shadow_plugin")
        assert sys.path == before, (before, sys.path)
        import torchvision
        print(torchvision.__file__)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(run_file)], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "site-packages" in proc.stdout or "dist-packages" in proc.stdout, proc.stdout


def test_a_plugin_named_like_an_installed_module_is_refused(tree):
    runs, _ = tree
    (runs / "torchvision.py").write_text(PLUGIN)
    with pytest.raises(RunFileError) as info:
        load_run(write_run(runs, "torchvision"), pm=get_plugin_manager(entrypoints=False))
    msg = str(info.value)
    assert info.value.key == "plugins[0]" and info.value.file == str(runs / "run.toml")
    assert f"{runs / 'torchvision.py'}" in msg and "would hide that module" in msg
    if "torchvision" in sys.modules:
        assert not sys.modules["torchvision"].__file__.startswith(str(runs))


@pytest.mark.parametrize("name", ["os", "this"])
def test_a_standard_library_module_is_not_a_plugin(tree, name, capsys):
    runs, _ = tree
    with pytest.raises(RunFileError) as info:
        load_run(write_run(runs, name), pm=get_plugin_manager(entrypoints=False))
    assert info.value.key == "plugins[0]" and info.value.file == str(runs / "run.toml")
    assert "standard library, not a detcore plugin" in str(info.value)
    assert "Zen of Python" not in capsys.readouterr().out  # `this` was not even imported


def test_a_module_without_hook_implementations_is_refused(tree):
    runs, _ = tree
    (runs / "fx_no_hooks.py").write_text("def helper():\n    return 1\n")
    with pytest.raises(RunFileError) as info:
        load_run(write_run(runs, "fx_no_hooks"), pm=get_plugin_manager(entrypoints=False))
    assert info.value.key == "plugins[0]"
    assert "defines no detcore hook implementation" in str(info.value)
    # -p refuses it the same way.
    with pytest.raises(PluginError, match="defines no detcore hook implementation"):
        get_plugin_manager(["fx_no_hooks"], search_dirs=[str(runs)], entrypoints=False)


def test_a_run_file_plugin_is_not_taken_from_the_current_directory(tree, monkeypatch):
    runs, cwd = tree
    (cwd / "fx_in_cwd.py").write_text(PLUGIN)
    run_file = write_run(runs, "fx_in_cwd")
    with pytest.raises(RunFileError) as info:
        load_run(run_file, pm=get_plugin_manager(entrypoints=False))
    assert "not found (named in a run file): there is no fx_in_cwd.py or package fx_in_cwd/ in " + str(runs) in str(info.value)
    # `python -m detcore` puts the current directory on sys.path: still refused.
    monkeypatch.syspath_prepend(str(cwd))
    with pytest.raises(RunFileError, match="is in the current directory, where a run file's plugins are not looked up"):
        load_run(run_file, pm=get_plugin_manager(entrypoints=False))


def test_dash_p_loads_from_the_current_directory_without_touching_sys_path(tree):
    # docs/plugins.md: "-p MODULE (it must be importable from the current
    # directory or sys.path)".
    _, cwd = tree
    (cwd / "fx_dash_p.py").write_text(PLUGIN)
    before = list(sys.path)
    pm = get_plugin_manager(["fx_dash_p"], entrypoints=False)
    assert pm.has_plugin("fx_dash_p") and sys.path == before
    with pytest.raises(PluginError, match=r"not found \(-p fx_dash_q\): .* and it is not an installed module"):
        get_plugin_manager(["fx_dash_q"], entrypoints=False)


def test_a_package_next_to_the_run_file_with_relative_imports(tree):
    runs, _ = tree
    pkg = runs / "fx_local_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("NAME = 'fx_local_pkg'\n")
    (pkg / "plugin.py").write_text(PLUGIN + "from .helpers import NAME\n")
    run = load_run(write_run(runs, "fx_local_pkg.plugin"), pm=get_plugin_manager(entrypoints=False))
    assert run.pm.has_plugin("fx_local_pkg.plugin")
    assert sys.modules["fx_local_pkg.plugin"].NAME == "fx_local_pkg"


def test_cli_names_the_run_file_and_key(tmp_path):
    run_file = write_run(tmp_path, "this")
    proc = run_detcore("config", "check", run_file, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"detcore: error: {run_file}: key 'plugins[0]': plugin module 'this'")
    assert "Zen of Python" not in proc.stdout
