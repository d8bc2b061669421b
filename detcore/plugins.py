"""The plugin manager: built-in plugins, entry points, ``-p`` modules and blocking."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from importlib import metadata

import pluggy

import detcore
from detcore import hookspecs
from detcore.errors import PluginError, did_you_mean

ENTRY_POINT_GROUP = "detcore"

# detcore's own components are plugins registered exactly like third-party
# ones (pytest's model), under these names; ``-p no:NAME`` blocks them too.
BUILTIN_PLUGINS: dict[str, str] = {
    "detcore.models": "detcore.builtin.models",
    "detcore.data": "detcore.builtin.data",
    "detcore.commands": "detcore.builtin.commands",
    "detcore.tools": "detcore.builtin.tools",
    "detcore.synthetic": "detcore.builtin.synthetic",
}


class DetcorePluginManager(pluggy.PluginManager):
    """``pluggy.PluginManager("detcore")`` that knows which distribution (and
    version) each plugin came from."""

    def __init__(self, *, strict: bool = True) -> None:
        super().__init__("detcore")
        self.add_hookspecs(hookspecs)
        self._origin: dict[str, tuple[str, str]] = {}
        # strict: the first plugin problem raises PluginError (every command).
        # Otherwise (``detcore plugins --check``) problems are collected per
        # plugin and the broken plugin is left out, so all are reported.
        self.strict = strict
        self.problems: dict[str, list[str]] = {}

    def _fail(self, plugin_name: str, message: str) -> None:
        if self.strict:
            raise PluginError(message)
        self.problems.setdefault(plugin_name, []).append(message)

    # -- who provides what ------------------------------------------------

    def distribution_of(self, plugin_name: str) -> tuple[str, str]:
        """``(distribution, version)`` of a plugin; built-ins report detcore and
        ``-p`` modules report ``local module`` and their file."""
        return self._origin.get(plugin_name, ("(registered in-process)", ""))

    def describe(self, plugin_name: str) -> str:
        dist, version = self.distribution_of(plugin_name)
        return f"{dist} {version}".strip()

    # -- loading ----------------------------------------------------------

    def register_origin(self, plugin, name: str, distribution: str, version: str):
        try:
            result = self.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            # pluggy may have added some of the plugin's hooks before the one
            # that failed: take them all out again.
            if self.get_plugin(name) is not None:
                self.unregister(name=name)
            self._origin[name] = (distribution, version)
            self._fail(
                name,
                f"plugin '{name}' ({distribution} {version}) does not fit detcore's hook specs: "
                f"{_one_line(exc)}. See docs/plugins.md for the hook names and their arguments.",
            )
            return None
        except ValueError as exc:
            other = self.get_name(plugin)
            if other is not None:
                raise PluginError(
                    f"'{name}' is already loaded as plugin '{other}' ({self.describe(other)})"
                ) from None
            first = self._origin.get(name, ("another plugin", ""))
            raise PluginError(
                f"two plugins are named '{name}': {' '.join(first).strip()} and "
                f"{distribution} {version}. Uninstall one, or block it with '-p no:{name}'. ({exc})"
            ) from None
        if result is not None:
            self._origin[name] = (distribution, version)
        return result

    def load_builtins(self) -> None:
        for name, module_name in BUILTIN_PLUGINS.items():
            if self.is_blocked(name):
                continue
            module = importlib.import_module(module_name)
            self.register_origin(module, name, "detcore", detcore.__version__)

    def load_entrypoints(self) -> None:
        for ep in _entry_points():
            if self.is_blocked(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "unknown distribution"
            version = dist.version if dist is not None else ""
            if self.is_blocked(dist_name):
                continue
            if self.has_plugin(ep.name) or ep.name in self.problems:
                first = self._origin.get(ep.name, ("", ""))
                if first[0] != dist_name:
                    # The same distribution seen twice on sys.path is harmless;
                    # two distributions claiming one plugin name are not.
                    self._fail(
                        ep.name,
                        f"two plugins are named '{ep.name}': {' '.join(first).strip()} and "
                        f"{dist_name} {version}. Uninstall one, or block one by distribution "
                        f"name with '-p no:DISTRIBUTION'.",
                    )
                continue
            self._origin.setdefault(ep.name, (dist_name, version))
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(
                    ep.name,
                    f"plugin '{ep.name}' from distribution {dist_name} {version} failed to import "
                    f"({ep.value}): {type(exc).__name__}: {exc}. Reinstall or fix it, or run with "
                    f"'-p no:{ep.name}' to skip it.",
                )
                continue
            self.register_origin(plugin, ep.name, dist_name, version)

    def load_module(self, module_name: str, *, search_dirs: Iterable[str] = ()) -> None:
        """Load a module by import name as a plugin (``-p MODULE``)."""
        if self.is_blocked(module_name) or self.has_plugin(module_name):
            return
        for d in [os.getcwd(), *search_dirs]:
            if d not in sys.path:
                sys.path.insert(0, d)
        self._origin.setdefault(module_name, ("local module", ""))
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                self._fail(
                    module_name,
                    f"plugin module '{module_name}' not found: it must be importable from the "
                    f"current directory or sys.path (for -p or a run file's 'plugins' list).",
                )
            else:
                self._fail(
                    module_name,
                    f"plugin module '{module_name}' (local module) failed to import: "
                    f"ModuleNotFoundError: {exc}",
                )
            return
        except Exception as exc:
            self._fail(
                module_name,
                f"plugin module '{module_name}' (local module) failed to import: "
                f"{type(exc).__name__}: {exc}. Fix it, or leave it out of -p / 'plugins'.",
            )
            return
        if self.is_registered(module):
            # Already loaded, e.g. as an installed distribution's entry point.
            self._origin.pop(module_name, None)
            return
        self.register_origin(module, module_name, "local module", getattr(module, "__file__", "") or "")

    def spec_names(self) -> list[str]:
        """Names of the hooks plugins may implement."""
        return sorted(
            name
            for name, caller in vars(self.hook).items()
            if not name.startswith("_") and caller.has_spec()
        )

    def check_hooks(self) -> None:
        """Report hook implementations that match no spec (a typo in a name);
        pluggy's ``check_pending``, but naming the plugin and the closest hook."""
        specs = self.spec_names()
        for name, caller in list(vars(self.hook).items()):
            if name.startswith("_") or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                plugin = impl.plugin_name
                self._fail(
                    plugin,
                    f"plugin '{plugin}' ({self.describe(plugin)}) implements unknown hook "
                    f"'{name}'{did_you_mean(name, specs)}. Hook names are: {', '.join(specs)}.",
                )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _entry_points():
    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, []))  # pragma: no cover - Python < 3.10


def parse_plugin_args(values: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split ``-p`` values into (modules to load, names to block)."""
    load, block = [], []
    for v in values:
        if v.startswith("no:"):
            block.append(v[3:])
        else:
            load.append(v)
    return load, block


def get_plugin_manager(
    plugin_args: Iterable[str] = (),
    *,
    extra_modules: Iterable[str] = (),
    search_dirs: Iterable[str] = (),
    entrypoints: bool = True,
    builtins: bool = True,
    strict: bool = True,
) -> DetcorePluginManager:
    """A plugin manager with detcore's built-ins, installed entry points and
    the ``-p`` modules loaded, and blocked names skipped.

    With ``strict=False`` plugin problems are collected in ``pm.problems``
    (plugin name -> messages) instead of raised."""
    load, block = parse_plugin_args(plugin_args)
    pm = DetcorePluginManager(strict=strict)
    for name in block:
        pm.set_blocked(name)
    if builtins:
        pm.load_builtins()
    if entrypoints:
        pm.load_entrypoints()
    for module_name in [*load, *extra_modules]:
        pm.load_module(module_name, search_dirs=search_dirs)
    pm.check_hooks()
    return pm
