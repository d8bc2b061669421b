"""The plugin system: entry-point discovery, who provides what, name
conflicts and ``plugin:name``, blocking, plugins that fail to import, and a
plugin built into a wheel and installed into a fresh virtual environment.

Installed distributions are made for real: a ``NAME-VERSION.dist-info``
folder with ``METADATA`` and ``entry_points.txt`` next to the module, on
``PYTHONPATH``, is exactly what importlib.metadata reads after ``pip
install``. The wheel tests at the end go the whole way through pip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import detcore
from detcore.catalog import Catalog
from detcore.errors import PluginError, RunFileError
from detcore.plugins import BUILTIN_PLUGINS, get_plugin_manager

FIXTURES = Path(__file__).parent / "fixtures"
GOOD = FIXTURES / "good.toml"
DETCORE = Path(sys.executable).with_name("detcore")

SHARED_BACKBONE = """
from detcore import hookimpl


def fx_shared(width: int = 8):
    raise AssertionError("not built")


@hookimpl
def detcore_backbones():
    return {"fx_shared": fx_shared}
"""


def make_dist(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]):
    """Install a distribution the way pip lays it out: modules plus a
    ``.dist-info`` with its entry points in the ``detcore`` group."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[detcore]\n{eps}")


def detcore_cli(*args, site: Path | None = None, cwd=FIXTURES) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run(
        [str(DETCORE), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture()
def site(tmp_path, monkeypatch):
    """A site directory holding two distributions that both provide backbone
    ``fx_shared``, and one whose plugin module fails to import."""
    site = tmp_path / "site"
    make_dist(site, "detcore-fx-a", "1.2.3", {"fxa": "detcore_fx_a"}, {"detcore_fx_a": SHARED_BACKBONE})
    make_dist(site, "detcore-fx-b", "0.4", {"fxb": "detcore_fx_b.plugin"}, {})
    (site / "detcore_fx_b").mkdir()
    (site / "detcore_fx_b" / "__init__.py").write_text("")
    (site / "detcore_fx_b" / "plugin.py").write_text(SHARED_BACKBONE)
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture()
def broken_site(tmp_path):
    site = tmp_path / "broken"
    make_dist(
        site,
        "detcore-fx-broken",
        "0.9",
        {"fxbroken": "detcore_fx_broken"},
        {"detcore_fx_broken": "import detcore\nimport cv3  # not installed\n"},
    )
    return site


# ----------------------------------------------------------------------
# in-process: the plugin manager and the catalog
# ----------------------------------------------------------------------


def test_builtins_are_plugins_of_the_detcore_distribution():
    pm = get_plugin_manager(entrypoints=False)
    assert [name for name, _ in pm.list_name_plugin()] == list(BUILTIN_PLUGINS)
    for name in BUILTIN_PLUGINS:
        assert pm.distribution_of(name) == ("detcore", detcore.__version__)
    catalog = Catalog.from_plugin_manager(pm)
    train = catalog.get("command", "train")
    assert (train.plugin, train.distribution, train.version) == (
        "detcore.commands",
        "detcore",
        detcore.__version__,
    )


def test_entry_point_components_know_their_distribution(site):
    pm = get_plugin_manager()
    assert pm.distribution_of("fxa") == ("detcore-fx-a", "1.2.3")
    assert pm.distribution_of("fxb") == ("detcore-fx-b", "0.4")
    catalog = Catalog.from_plugin_manager(pm)
    providers = {(c.plugin, c.distribution, c.version) for c in catalog if c.name == "fx_shared"}
    assert providers == {("fxa", "detcore-fx-a", "1.2.3"), ("fxb", "detcore-fx-b", "0.4")}


def test_same_name_from_two_plugins_is_an_error_naming_both(site):
    catalog = Catalog.from_plugin_manager(get_plugin_manager())
    with pytest.raises(RunFileError) as info:
        catalog.get("backbone", "fx_shared", key="model.backbone.type", file="run.toml")
    msg = str(info.value)
    assert msg.startswith("run.toml: key 'model.backbone.type': backbone 'fx_shared'")
    assert "'fxa' (detcore-fx-a 1.2.3)" in msg and "'fxb' (detcore-fx-b 0.4)" in msg
    assert "Write 'fxa:fx_shared' or 'fxb:fx_shared'" in msg
    # The qualified name picks one, by plugin or by distribution name.
    assert catalog.get("backbone", "fxa:fx_shared").plugin == "fxa"
    assert catalog.get("backbone", "detcore-fx-b:fx_shared").plugin == "fxb"
    with pytest.raises(RunFileError, match="It is provided by: fxa, fxb"):
        catalog.get("backbone", "fxc:fx_shared")


def test_blocking_removes_the_conflict(site):
    catalog = Catalog.from_plugin_manager(get_plugin_manager(["no:fxa"]))
    assert catalog.get("backbone", "fx_shared").plugin == "fxb"
    catalog = Catalog.from_plugin_manager(get_plugin_manager(["no:detcore-fx-b"]))
    assert catalog.get("backbone", "fx_shared").plugin == "fxa"


def test_a_registration_hook_that_raises_names_the_plugin(tmp_path, monkeypatch):
    (tmp_path / "fx_raises.py").write_text(
        "from detcore import hookimpl\n\n@hookimpl\ndef detcore_metrics():\n    return {}['x']\n"
    )
    pm = get_plugin_manager(["fx_raises"], search_dirs=[str(tmp_path)], entrypoints=False)
    with pytest.raises(PluginError) as info:
        Catalog.from_plugin_manager(pm)
    assert "plugin 'fx_raises' (local module" in str(info.value)
    assert "failed in detcore_metrics(): KeyError: 'x'" in str(info.value)


def test_a_registration_hook_must_return_a_dict(tmp_path):
    (tmp_path / "fx_list.py").write_text(
        "from detcore import hookimpl\n\n@hookimpl\ndef detcore_heads():\n    return ['h']\n"
    )
    pm = get_plugin_manager(["fx_list"], search_dirs=[str(tmp_path)], entrypoints=False)
    with pytest.raises(PluginError, match=r"detcore_heads\(\) must return a dict"):
        Catalog.from_plugin_manager(pm)


def test_two_distributions_claiming_one_plugin_name(tmp_path, monkeypatch):
    site = tmp_path / "dup"
    make_dist(site, "detcore-fx-one", "1.0", {"fxdup": "fx_one"}, {"fx_one": SHARED_BACKBONE})
    make_dist(site, "detcore-fx-two", "2.0", {"fxdup": "fx_two"}, {"fx_two": SHARED_BACKBONE})
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    assert "two plugins are named 'fxdup'" in str(info.value)
    assert "detcore-fx-one 1.0" in str(info.value) and "detcore-fx-two 2.0" in str(info.value)
    assert get_plugin_manager(["no:detcore-fx-two"]).distribution_of("fxdup") == ("detcore-fx-one", "1.0")


def test_non_strict_manager_collects_problems_per_plugin(broken_site, monkeypatch):
    monkeypatch.syspath_prepend(str(broken_site))
    pm = get_plugin_manager(
        ["fx_typo_hook", "fx_wrong_args", "fx_components"], search_dirs=[str(FIXTURES)], strict=False
    )
    assert set(pm.problems) == {"fxbroken", "fx_typo_hook", "fx_wrong_args"}
    assert pm.has_plugin("fx_components") and not pm.has_plugin("fx_wrong_args")
    # The wrongly written plugin left no hook implementation behind.
    assert all(impl.plugin_name != "fx_wrong_args" for impl in pm.hook.detcore_before_run.get_hookimpls())


# ----------------------------------------------------------------------
# through real `detcore` processes
# ----------------------------------------------------------------------


@pytest.mark.slow
def test_cli_lists_entry_point_plugins_and_reports_conflicts(site):
    proc = detcore_cli("plugins", site=site)
    assert proc.returncode == 0, proc.stderr
    assert "fxa  (detcore-fx-a 1.2.3)\n    backbones     fx_shared" in proc.stdout
    assert "fxb  (detcore-fx-b 0.4)\n    backbones     fx_shared" in proc.stdout

    shared = ("--set", "model.backbone={ type = 'fx_shared' }")
    proc = detcore_cli("config", "check", GOOD, *shared, site=site)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "key 'model.backbone.type'" in proc.stderr
    assert "'fxa' (detcore-fx-a 1.2.3) and 'fxb' (detcore-fx-b 0.4)" in proc.stderr
    assert "Write 'fxa:fx_shared' or 'fxb:fx_shared'" in proc.stderr

    picked = ("--set", "model.backbone={ type = 'fxb:fx_shared', width = 4 }")
    assert detcore_cli("config", "check", GOOD, *picked, site=site).returncode == 0
    blocked = detcore_cli("config", "check", GOOD, *shared, "-p", "no:fxa", site=site)
    assert blocked.returncode == 0, blocked.stderr


@pytest.mark.slow
def test_cli_plugin_that_fails_to_import(broken_site):
    proc = detcore_cli("plugins", site=broken_site)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    err = proc.stderr
    assert "plugin 'fxbroken' from distribution detcore-fx-broken 0.9 failed to import" in err
    assert "ModuleNotFoundError: No module named 'cv3'" in err
    assert "'-p no:fxbroken'" in err
    # Blocking it (by plugin or distribution name) gets the user going again.
    assert detcore_cli("config", "check", GOOD, "-p", "no:fxbroken", site=broken_site).returncode == 0
    assert detcore_cli("plugins", "-p", "no:detcore-fx-broken", site=broken_site).returncode == 0
    # --check reports it with the others instead of stopping.
    check = detcore_cli("plugins", "--check", "-p", "fx_typo_hook", site=broken_site)
    assert check.returncode == 1 and "Traceback" not in check.stdout + check.stderr
    assert "  fxbroken (detcore-fx-broken 0.9):" in check.stdout
    assert "  fx_typo_hook (local module" in check.stdout


@pytest.mark.slow
def test_cli_blocks_a_plugin_by_name():
    proc = detcore_cli("config", "check", GOOD, "-p", "no:fx_components")
    # good.toml loads fx_components through its plugins list: blocked, its
    # detector is unknown and the error says what is installed.
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "key 'model.type': unknown detector 'fx_detector'" in proc.stderr


# ----------------------------------------------------------------------
# docs/plugins.md: the hook reference is generated from detcore/hookspecs.py
# ----------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
REF_BEGIN = "<!-- hook reference: generated from detcore/hookspecs.py by `python tests/test_plugin_system.py`; do not edit -->"
REF_END = "<!-- end of hook reference -->"


def render_hook_reference() -> str:
    """The hook reference section of docs/plugins.md, from the hook specs'
    signatures and docstrings (and the runner attributes of the module
    docstring)."""
    import inspect

    from detcore import hookspecs

    lines = [REF_BEGIN, ""]
    specs = [f for name, f in vars(hookspecs).items() if name.startswith("detcore_") and hasattr(f, "detcore_spec")]
    families = [
        ("Registration hooks", [f for f in specs if not inspect.signature(f).parameters]),
        ("Runtime hooks", [f for f in specs if inspect.signature(f).parameters]),
    ]
    for title, funcs in families:
        lines += [f"### {title}", ""]
        for f in funcs:
            args = ", ".join(inspect.signature(f).parameters)
            flags = " *(firstresult)*" if f.detcore_spec.get("firstresult") else ""
            lines += [f"#### `{f.__name__}({args})`{flags}", "", inspect.cleandoc(f.__doc__), ""]
    module_doc = inspect.cleandoc(hookspecs.__doc__)
    runner_part = module_doc[module_doc.index("The ``runner`` argument") :].splitlines()
    # The docstring's definition list (term, indented description) as a
    # Markdown list: indented lines would render as code.
    out: list[str] = []
    for line in runner_part:
        if line.startswith("    ") and out and out[-1].startswith("- "):
            out[-1] += (": " if out[-1].endswith("``") else " ") + line.strip()
        elif line.startswith("``"):
            out.append(f"- {line.strip()}")
        else:
            out.append(line)
    lines += ["### The `runner` argument", "", *out, "", REF_END]
    return "\n".join(lines)


def test_docs_hook_reference_matches_the_hook_specs():
    text = DOCS.read_text()
    assert REF_BEGIN in text and REF_END in text, "docs/plugins.md lost its hook reference markers"
    current = text[text.index(REF_BEGIN) : text.index(REF_END) + len(REF_END)]
    assert current == render_hook_reference(), (
        "docs/plugins.md's hook reference is out of date with detcore/hookspecs.py: "
        "run `python tests/test_plugin_system.py` to regenerate it"
    )


if __name__ == "__main__":  # regenerate the hook reference in docs/plugins.md
    text = DOCS.read_text()
    start, end = text.index(REF_BEGIN), text.index(REF_END) + len(REF_END)
    DOCS.write_text(text[:start] + render_hook_reference() + text[end:])
    print(f"updated {DOCS}")
