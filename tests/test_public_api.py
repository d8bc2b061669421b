"""detcore's declared public API: ``detcore.PUBLIC`` plus the public modules.

The import contracts themselves run as ``lint-imports`` in scripts/test.sh;
these tests keep the contract file, the docs' list of public names and the
old import paths from drifting away from ``detcore.PUBLIC``.
"""

from __future__ import annotations

import configparser
import inspect
import pkgutil
import subprocess
import sys
import typing
import warnings
from pathlib import Path

import pytest
from generated_docs import GeneratedSection

import detcore

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "plugins.md"
PUBLIC_MODULES = ("detcore.errors", "detcore.testing", "detcore.hookspecs")
API_BEGIN = "<!-- public API: generated from detcore.PUBLIC by `python tests/test_public_api.py`; do not edit -->"
API_END = "<!-- end of public API -->"
# Classes detcore builds and hands to plugin code: shown without a constructor.
_HANDED_OVER = {"Sub", "Spec", "CheckContext"}


def test_every_public_name_resolves_and_is_listed():
    assert set(detcore.__all__) == {"__version__", "hookimpl", "hookspec", *detcore.PUBLIC}
    for name, module in detcore.PUBLIC.items():
        obj = getattr(detcore, name)
        assert obj is getattr(sys.modules[module], name)
        assert name in dir(detcore)
    with pytest.raises(AttributeError, match="no attribute 'Catalog'"):
        detcore.Catalog  # noqa: B018 - private names are not re-exported


def test_import_detcore_stays_light():
    # Run in a fresh interpreter: this one has torch loaded already.
    code = "import sys, detcore; detcore.Sub; detcore.build_pipeline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_old_import_paths_keep_working():
    from detcore.catalog import Command
    from detcore.data.image_io import read_image
    from detcore.data.transforms import build_pipeline
    from detcore.visualize import draw_detections, save_image

    assert (Command, read_image, build_pipeline, draw_detections, save_image) == (
        detcore.Command, detcore.read_image, detcore.build_pipeline, detcore.draw_detections, detcore.save_image
    )
    import detcore.cli.inference as inference

    with pytest.warns(DeprecationWarning, match="use detcore.image_to_uint8"):
        old = inference.image_to_uint8
    assert old is detcore.image_to_uint8


def test_import_contracts_forbid_every_private_module():
    """The plugins-use-public-api contract lists every detcore module that is
    not public, so a new private module cannot slip through it."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".importlinter")
    forbidden = set(cfg["importlinter:contract:plugins-use-public-api"]["forbidden_modules"].split())
    top = {f"detcore.{m.name}" for m in pkgutil.iter_modules(detcore.__path__)}
    assert top - forbidden == set(PUBLIC_MODULES), "update .importlinter's forbidden_modules (or detcore.PUBLIC)"
    assert not forbidden - top, f"stale names in .importlinter: {sorted(forbidden - top)}"


def test_import_contracts_cover_every_bundled_plugin():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".importlinter")
    sources = set(cfg["importlinter:contract:plugins-use-public-api"]["source_modules"].split())
    roots = set(cfg["importlinter"]["root_packages"].split())
    bundled = {
        pkg.name
        for dist in [REPO / "detcore-coco", REPO / "detcore-hooks", *(REPO / "plugins").iterdir()]
        for pkg in dist.glob("detcore_*/__init__.py")
        for pkg in [pkg.parent]
    }
    assert bundled <= sources, f"add {sorted(bundled - sources)} to .importlinter"
    assert sources <= roots and roots == sources | {"detcore"}


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (scripts/test.sh installs it)")
    proc = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout


def _signature(name: str, obj) -> str:
    if name in _HANDED_OVER:
        return f"class {name}"
    if typing.get_origin(obj) is typing.Annotated:  # a type-hint alias such as MetricName
        return f"{name} = {obj}".replace("typing.", "")
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        base = obj.__mro__[1].__name__
        return f"class {name}({base})"
    with warnings.catch_warnings():
        sig = inspect.signature(obj)
    prefix = "class " if inspect.isclass(obj) else ""
    text = f"{prefix}{name}{sig}".replace("'", "")
    return text.removesuffix(" -> None") if prefix else text


def render_public_api() -> str:
    lines = [
        API_BEGIN,
        "",
        "- `@hookimpl`, `@hookspec`  ",
        "  pluggy's markers for the ``detcore`` project: decorate hook implementations with ``@detcore.hookimpl``.",
    ]
    for name in detcore.PUBLIC:
        obj = getattr(detcore, name)
        summary = inspect.getdoc(obj).split("\n\n")[0].replace("\n", " ")
        lines += [f"- `{_signature(name, obj)}`  ", f"  {summary}"]
    lines += ["", API_END]
    return "\n".join(lines)


API_LIST = GeneratedSection(DOCS, API_BEGIN, API_END, render_public_api, "python tests/test_public_api.py")


def test_docs_list_the_public_api():
    API_LIST.check()


if __name__ == "__main__":  # regenerate the public API list in docs/plugins.md
    API_LIST.write()
