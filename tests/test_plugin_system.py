"""The plugin system: entry-point discovery, who provides what, name
conflicts and ``plugin:name``, blocking, plugins that fail to import, and a
plugin built into a wheel and installed into a fresh virtual environment.

Installed distributions are made for real: a ``NAME-VERSION.dist-info``
folder with ``METADATA`` and ``entry_points.txt`` next to the module, on
``PYTHONPATH``, is exactly what importlib.metadata reads after ``pip
install``. The wheel tests at the end go the whole way through pip.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest
from generated_docs import GeneratedSection

import detcore
from detcore.catalog import Catalog
from detcore.errors import PluginError, RunFileError
from detcore.plugins import BUILTIN_PLUGINS, get_plugin_manager
from detcore.testing import run_detcore

FIXTURES = Path(__file__).parent / "fixtures"
GOOD = FIXTURES / "good.toml"

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


# In tests/fixtures, where the fixture plugins are found; a site directory
# (the fixtures below) goes in ``plugin_paths``.
detcore_cli = functools.partial(run_detcore, cwd=FIXTURES)


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


def test_dash_p_of_an_installed_plugin_module_is_a_no_op(site):
    pm = get_plugin_manager(["detcore_fx_a", "detcore_fx_b.plugin"])
    names = [name for name, _ in pm.list_name_plugin()]
    assert names.count("fxa") == 1 and "detcore_fx_a" not in names and "detcore_fx_b.plugin" not in names
    assert pm.distribution_of("fxa") == ("detcore-fx-a", "1.2.3")


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
    proc = detcore_cli("plugins", plugin_paths=[site])
    assert proc.returncode == 0, proc.stderr
    assert "fxa  (detcore-fx-a 1.2.3)\n    backbones     fx_shared" in proc.stdout
    assert "fxb  (detcore-fx-b 0.4)\n    backbones     fx_shared" in proc.stdout

    shared = ("--set", "model.backbone={ type = 'fx_shared' }")
    proc = detcore_cli("config", "check", GOOD, *shared, plugin_paths=[site])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "key 'model.backbone.type'" in proc.stderr
    assert "'fxa' (detcore-fx-a 1.2.3) and 'fxb' (detcore-fx-b 0.4)" in proc.stderr
    assert "Write 'fxa:fx_shared' or 'fxb:fx_shared'" in proc.stderr

    picked = ("--set", "model.backbone={ type = 'fxb:fx_shared', width = 4 }")
    assert detcore_cli("config", "check", GOOD, *picked, plugin_paths=[site]).returncode == 0
    blocked = detcore_cli("config", "check", GOOD, *shared, "-p", "no:fxa", plugin_paths=[site])
    assert blocked.returncode == 0, blocked.stderr


@pytest.mark.slow
def test_cli_describes_one_component(site):
    # docs/runfile.md's command and output, as written
    doc = (Path(__file__).resolve().parents[1] / "docs" / "runfile.md").read_text()
    shown = re.search(r"```bash\n(detcore plugins resize)\n```\n\n```\n(.*?)```", doc, re.S)
    proc = detcore_cli(*shown.group(1).split()[1:])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == shown.group(2)
    # the rows are the factory's real signature
    from detcore.data.transforms import resize

    params = inspect.signature(resize).parameters
    rows = proc.stdout.split("default\n", 1)[1].splitlines()
    assert [r.split()[0] for r in rows] == list(params)

    # a plugin's component, its docstring-less factory and a qualified name
    proc = detcore_cli("plugins", "fxb:fx_shared", plugin_paths=[site])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fx_shared  (backbone from plugin fxb, detcore-fx-b 0.4)")
    assert re.search(r"width +integer +8", proc.stdout) and "fxa" not in proc.stdout
    # one name, several kinds: the coco dataset and the coco metric
    proc = detcore_cli("plugins", "coco")
    if proc.returncode == 0:  # detcore-coco installed
        assert "(dataset from plugin coco" in proc.stdout and "(metric from plugin coco" in proc.stdout
        assert re.search(r"iou_types +array of \"bbox\" / \"segm\" +\[\"bbox\"\]", proc.stdout)
        assert re.search(r"ann_file +string +required", proc.stdout)
    # a typo
    proc = detcore_cli("plugins", "resise")
    assert proc.returncode == 1 and "did you mean 'resize'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_plugin_that_fails_to_import(broken_site):
    proc = detcore_cli("plugins", plugin_paths=[broken_site])
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    err = proc.stderr
    assert "plugin 'fxbroken' from distribution detcore-fx-broken 0.9 failed to import" in err
    assert "ModuleNotFoundError: No module named 'cv3'" in err
    assert "'-p no:fxbroken'" in err
    # Blocking it (by plugin or distribution name) gets the user going again.
    assert detcore_cli("config", "check", GOOD, "-p", "no:fxbroken", plugin_paths=[broken_site]).returncode == 0
    assert detcore_cli("plugins", "-p", "no:detcore-fx-broken", plugin_paths=[broken_site]).returncode == 0
    # --check reports it with the others instead of stopping.
    check = detcore_cli("plugins", "--check", "-p", "fx_typo_hook", plugin_paths=[broken_site])
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
# wheels installed into a fresh virtual environment
# ----------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "plugins" / "detcore-example"

# pip offline: no index, and the build backend (setuptools) from the
# environment instead of an isolated download.
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@attrs.frozen
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(OFFLINE_PIP)
        env["VIRTUAL_ENV"] = str(self.root)
        env["PATH"] = os.pathsep.join([str(self.root / "bin"), env.get("PATH", "")])
        return env

    def run(self, command: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-e", "-c", command], cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=timeout
        )


def _build_wheel(project: Path, out: Path) -> Path:
    import shutil

    # Built from a copy: setuptools writes build/ and *.egg-info into the tree.
    src = out.parent / f"src-{project.name}"
    shutil.copytree(project, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        env={**os.environ, **OFFLINE_PIP},
        timeout=300,
    )
    (wheel,) = out.glob(project.name.replace("-", "_") + "-*.whl")
    return wheel


def make_venv(root: Path) -> Venv:
    """A virtual environment without system site packages that reuses this
    one's packages (torch, and detcore's editable install) through a .pth
    file, and a ``detcore`` script as pip would install with detcore."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    venv = Venv(root)
    purelib = subprocess.run(
        [str(venv.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    Path(purelib, "_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    script = root / "bin" / "detcore"
    script.write_text(f"#!{venv.python}\nimport sys\nfrom detcore.cli.main import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return venv


@pytest.fixture(scope="module")
def example_venv(tmp_path_factory) -> Venv:
    """A fresh venv with the example plugin's wheel pip-installed (built once
    per test session module)."""
    tmp = tmp_path_factory.mktemp("venv")
    wheel = _build_wheel(EXAMPLE, tmp / "wheels")
    venv = make_venv(tmp / "venv")
    proc = venv.run(f"python -m pip install --no-deps --no-index {wheel}", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return venv


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_is_listed_and_validates(example_venv, tmp_path):
    where = example_venv.run("python -c 'import detcore_example, detcore; print(detcore_example.__file__)'", tmp_path)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(example_venv.root)), "the wheel's copy is not the one imported"
    proc = example_venv.run("detcore plugins", tmp_path)
    assert proc.returncode == 0, proc.stderr
    block = proc.stdout.split("example  (detcore-example 0.1.0)\n", 1)[1].split("\n\n")[0]
    for line in [
        "backbones     example_convnet",
        "heads         shared_tower_fcos_head",
        "datasets      csv_boxes",
        "transforms    gaussian_noise",
        "metrics       box_recall",
        "runner_hooks  loss_history",
        "commands      example-csv",
    ]:
        assert line in block, (line, proc.stdout)
    (tmp_path / "run.toml").write_text(
        textwrap.dedent(
            """\
            [model]
            type = "fcos"
            num_classes = 3
            backbone = { type = "example:example_convnet", widths = [8, 16] }
            head = { type = "shared_tower_fcos_head" }

            [data.train]
            type = "synthetic"
            transforms = [{ type = "gaussian_noise", std = 4.0 }]

            [[metrics]]
            type = "box_recall"

            [[hooks]]
            type = "loss_history"
            """
        )
    )
    check = example_venv.run("detcore config check run.toml", tmp_path)
    assert check.returncode == 0, check.stderr
    bad = example_venv.run("detcore config check run.toml --set model.backbone.widht=3 || echo status $?", tmp_path)
    assert "did you mean 'widths'" in bad.stderr and "status 2" in bad.stdout
    assert "Traceback" not in bad.stderr


def _readme_commands(readme: Path) -> list[str]:
    text = readme.read_text()
    block = text.split("## Try it", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_example_readme_commands_train_every_component(example_venv, tmp_path):
    """The example README's commands, in the fresh venv (its install line is
    the wheel install above): lists, checks, makes data with the plugin's
    command, trains with every component."""
    import shutil

    import torch

    shutil.copytree(EXAMPLE / "examples", tmp_path / "plugins" / "detcore-example" / "examples")
    commands = _readme_commands(EXAMPLE / "README.md")
    assert commands[0] == "pip install ./plugins/detcore-example"
    proc = example_venv.run("\n".join(commands[1:]), tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all plugins check out" in proc.stdout
    assert "demo/boxes.csv: 8 images" in proc.stdout
    work = tmp_path / "work_dirs" / "example_demo"
    history = [json.loads(line) for line in (work / "loss_history.jsonl").read_text().splitlines()]
    assert [h["iter"] for h in history] == [0, 1, 2, 3]
    scalars = [json.loads(line) for line in (work / "scalars.jsonl").read_text().splitlines()]
    assert any("recall" in s for s in scalars)
    (ckpt,) = work.glob("iter_4.pth")
    state = torch.load(ckpt, weights_only=True, map_location="cpu")
    keys = list(state["model"])
    assert any(k.startswith("backbone.") and ".stages.2." in k for k in keys)  # example_convnet
    assert any("head.shared_tower." in k for k in keys)  # shared_tower_fcos_head
    assert state["hooks"]["loss_history"]["history"][0][0] == 0  # loss_history's state


@pytest.mark.slow
def test_check_reports_a_misspelled_hook_in_an_installed_plugin(example_venv, tmp_path):
    # A second distribution, built and pip-installed like the example, whose
    # plugin implements a misspelled hook and a hook with a wrong argument.
    proj = tmp_path / "detcore-typo"
    (proj / "detcore_typo").mkdir(parents=True)
    (proj / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "detcore-typo"
            version = "0.2.0"
            dependencies = ["detcore"]

            [project.entry-points.detcore]
            typo = "detcore_typo.plugin"
            typo_args = "detcore_typo.args"
            """
        )
    )
    (proj / "detcore_typo" / "__init__.py").write_text("")
    (proj / "detcore_typo" / "plugin.py").write_text(
        "from detcore import hookimpl\n\n@hookimpl\ndef detcore_befor_run(runner):\n    pass\n"
    )
    (proj / "detcore_typo" / "args.py").write_text(
        "from detcore import hookimpl\n\n@hookimpl\ndef detcore_after_val_epoch(runner, metric):\n    pass\n"
    )
    wheel = _build_wheel(proj, tmp_path / "wheels")
    venv = make_venv(tmp_path / "venv")
    assert venv.run(f"python -m pip install --no-deps --no-index {wheel}", tmp_path).returncode == 0
    proc = venv.run("detcore plugins --check || echo status $?", tmp_path)
    assert "status 1" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr
    report = proc.stdout.split("\nproblems (", 1)[1]
    assert "  typo (detcore-typo 0.2.0):" in report
    assert "unknown hook 'detcore_befor_run' (did you mean 'detcore_before_run'?)" in report
    assert "  typo_args (detcore-typo 0.2.0):" in report
    assert "detcore_after_val_epoch(runner, metric)" in report
    # Any other command refuses to start, naming the plugin.
    other = venv.run("detcore --help", tmp_path)
    assert other.returncode == 2 and "plugin 'typo" in other.stderr and "Traceback" not in other.stderr


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


HOOK_REFERENCE = GeneratedSection(DOCS, REF_BEGIN, REF_END, render_hook_reference, "python tests/test_plugin_system.py")


def test_docs_hook_reference_matches_the_hook_specs():
    HOOK_REFERENCE.check()


if __name__ == "__main__":  # regenerate the hook reference in docs/plugins.md
    HOOK_REFERENCE.write()


# ----------------------------------------------------------------------
# docs/plugins.md: every code block runs (or is a real file's excerpt)
# ----------------------------------------------------------------------

_MARKER = re.compile(r"<!-- (file: (?P<file>\S+)|excerpt: (?P<excerpt>\S+)|(?P<run>run)|(?P<output>output)) -->\n```[a-z]*\n")


def doc_blocks(text: str) -> list[tuple[str, str, str]]:
    """``(kind, argument, body)`` of every fenced block, from the marker line
    right above it; a block without a marker is an error."""
    blocks = []
    for fence in re.finditer(r"^```[a-z]*\n(.*?)^```$", text, flags=re.S | re.M):
        head = text[: fence.start()]
        m = _MARKER.match(text, head.rfind("<!--")) if head.rstrip().endswith("-->") else None
        if m is None or m.end() != fence.start() + len(fence.group(0).split("\n", 1)[0]) + 1:
            line = text[: fence.start()].count("\n") + 1
            raise AssertionError(f"docs/plugins.md:{line}: code block without a file/excerpt/run/output marker")
        kind = next(k for k in ("file", "excerpt", "run", "output") if m.group(k))
        blocks.append((kind, m.group(kind) if kind in ("file", "excerpt") else "", fence.group(1)))
    return blocks


def _output_line_pattern(line: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in line.split("...")))


def test_docs_blocks_are_all_marked_and_excerpts_match():
    blocks = doc_blocks(DOCS.read_text())
    assert {k for k, _, _ in blocks} == {"file", "excerpt", "run", "output"}
    for kind, arg, body in blocks:
        if kind == "excerpt":
            assert body in (REPO / arg).read_text(), f"docs/plugins.md quotes {arg}, which no longer says:\n{body}"


@pytest.mark.slow
def test_docs_code_blocks_run_as_written(example_venv, tmp_path):
    last = None
    for kind, arg, body in doc_blocks(DOCS.read_text()):
        if kind == "file":
            path = tmp_path / arg
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        elif kind == "run":
            last = example_venv.run(body, tmp_path, timeout=600)
            assert last.returncode == 0, f"{body}\n---\n{last.stdout[-3000:]}\n{last.stderr[-3000:]}"
        elif kind == "output":
            shown = last.stdout + last.stderr
            for line in filter(str.strip, body.splitlines()):
                assert _output_line_pattern(line).search(shown), f"docs say:\n{line}\ngot:\n{shown[-3000:]}"
