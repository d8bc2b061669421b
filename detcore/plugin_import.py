"""Importing a plugin module from a given folder without touching ``sys.path``.

A run file's ``plugins = ["my_plugin"]`` names a file next to the run file,
and ``-p my_plugin`` one in the current directory. Putting those folders on
``sys.path`` (as detcore once did) would let any file there shadow an
installed package for the rest of the process (a ``torchvision.py`` next to
a run file ran at the next ``import torchvision``). Instead the one module
named is loaded from its file with ``importlib`` machinery, and nothing
else in its folder becomes importable.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["ModuleClash", "find_in", "import_from", "installed_spec", "origin_of"]


class ModuleClash(Exception):
    """The local file has the name of a module that is installed or already
    imported from elsewhere: loading it would hide that module."""


def origin_of(module_or_spec) -> Path | None:
    """The resolved file (a package's ``__init__.py``) a module or spec comes
    from; ``None`` for built-in, frozen and namespace modules."""
    origin = getattr(module_or_spec, "origin", None)
    if origin is None and isinstance(module_or_spec, ModuleType):
        origin = getattr(module_or_spec, "__file__", None)
    if not origin or origin in ("built-in", "frozen"):
        return None
    try:
        return Path(origin).resolve()
    except OSError:  # pragma: no cover - an unreadable origin
        return None


def find_in(name: str, folders: list[str | Path]) -> importlib.machinery.ModuleSpec | None:
    """The spec of the top-level module of ``name`` (``pkg`` of ``pkg.sub``) as
    a file ``pkg.py`` or a package ``pkg/`` in one of ``folders`` (first
    wins); ``None`` when none of them holds it. Namespace folders (no
    ``__init__.py``) do not count."""
    top = name.partition(".")[0]
    spec = importlib.machinery.PathFinder.find_spec(top, [str(Path(f)) for f in folders])
    if spec is None or spec.origin is None or spec.loader is None:
        return None
    return spec


def import_from(name: str, spec: importlib.machinery.ModuleSpec) -> ModuleType:
    """Import ``name`` whose top-level module is ``spec`` (from
    :func:`find_in`). The top-level module is entered in ``sys.modules``
    under its name (dataclasses, pickling and a package's own relative
    imports need that); ``pkg.sub`` is then imported through the package's
    ``__path__``, so ``sys.path`` is never consulted or changed.

    Raises :class:`ModuleClash` when that name is already imported from
    another file, or would be found elsewhere by a plain ``import``."""
    top = name.partition(".")[0]
    here = origin_of(spec)
    loaded = sys.modules.get(top)
    if loaded is not None:
        if origin_of(loaded) != here:
            raise ModuleClash(f"a module '{top}' is already imported from {_where(loaded)}")
    else:
        other = installed_spec(top)
        if other is not None and origin_of(other) != here:
            raise ModuleClash(f"a module '{top}' is installed ({_where(other)})")
        module = importlib.util.module_from_spec(spec)
        sys.modules[top] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(top, None)
            raise
    return importlib.import_module(name)


def installed_spec(top: str):
    """The spec ``import top`` would find without the current directory
    (which ``python -m`` puts first on ``sys.path``), or ``None``."""
    cwd = os.getcwd()
    path = [p for p in sys.path if p not in ("", ".") and _resolved(p) != _resolved(cwd)]
    if top in sys.builtin_module_names:
        return importlib.machinery.ModuleSpec(top, None, origin="built-in")
    try:
        frozen = importlib.machinery.FrozenImporter.find_spec(top)
    except Exception:  # pragma: no cover - defensive: importer API differences
        frozen = None
    return frozen or importlib.machinery.PathFinder.find_spec(top, path)


def _resolved(p: str) -> str:
    try:
        return str(Path(p).resolve())
    except OSError:  # pragma: no cover
        return p


def _where(module_or_spec) -> str:
    origin = origin_of(module_or_spec)
    if origin is not None:
        return str(origin)
    return getattr(module_or_spec, "origin", None) or "a built-in module"
