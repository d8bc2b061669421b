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
    "detcore.plots": "detcore.builtin.plots",
    "detcore.hooks": "detcore.builtin.hooks",
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
        """Load a module by import name as a plugin (``-p MODULE``): a file or
        package of that name in ``search_dirs`` or the current directory,
        else an importable (installed) module. ``sys.path`` is not changed."""
        if self.is_blocked(module_name) or self.has_plugin(module_name):
            return
        where = "-p " + module_name
        try:
            module = self._import(module_name, [*search_dirs, os.getcwd()], where=where)
        except PluginError as exc:
            self._fail(module_name, str(exc))
            return
        self._register_module(module_name, module, where)

    def load_runfile_module(self, module_name: str, folder: str | os.PathLike) -> None:
        """Load a run file's ``plugins`` entry: ``MODULE.py`` (or a package
        ``MODULE/``) in ``folder``, the run file's own folder; failing that an
        installed module (``sys.path``), never one in the current directory.
        Raises :class:`PluginError` (the caller names the run file and key)."""
        if self.is_blocked(module_name) or self.has_plugin(module_name):
            return
        where = "named in a run file"
        module = self._import(module_name, [folder], where=where, from_cwd=False)
        if not self._register_module(module_name, module, where) and module_name in self.problems:
            raise PluginError(self.problems[module_name][-1])

    def _import(self, module_name: str, folders: list, *, where: str, from_cwd: bool = True):
        from detcore.plugin_import import ModuleClash, find_in, import_from, installed_spec

        self._origin.setdefault(module_name, ("local module", ""))
        spec = find_in(module_name, folders)
        try:
            if spec is not None:
                try:
                    return import_from(module_name, spec)
                except ModuleClash as exc:
                    raise PluginError(
                        f"plugin module '{module_name}' ({where}) is {spec.origin}, but {exc}; loading it "
                        f"would hide that module. Rename the plugin file."
                    ) from None
            missing = (
                f"plugin module '{module_name}' not found ({where}): there is no {module_name.partition('.')[0]}.py "
                f"or package {module_name.partition('.')[0]}/ in {', '.join(map(str, folders))}"
            )
            top = module_name.partition(".")[0]
            if top in getattr(sys, "stdlib_module_names", ()) or top in sys.builtin_module_names:
                # Not imported at all: ``this`` would print, others may do worse.
                raise PluginError(
                    f"plugin module '{module_name}' ({where}) is a module of Python's standard library, not a "
                    f"detcore plugin. Check the module name."
                )
            if top not in sys.modules and installed_spec(top) is None:
                in_cwd = find_in(module_name, [os.getcwd()])
                if in_cwd is not None and not from_cwd:
                    # ``python -m detcore`` puts the current directory on sys.path.
                    raise PluginError(
                        f"{missing}; the one found ({in_cwd.origin}) is in the current directory, where a run "
                        f"file's plugins are not looked up. Move it next to the run file, or load it with "
                        f"-p {module_name}."
                    )
                raise PluginError(missing + " and it is not an installed module (sys.path).")
            return importlib.import_module(module_name)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin module '{module_name}' ({where}, local module) failed to import: "
                f"{type(exc).__name__}: {exc}. Fix it, or leave it out of -p / 'plugins'."
            ) from None

    def _register_module(self, module_name: str, module, where: str) -> bool:
        if self.is_registered(module):
            # Already loaded, e.g. as an installed distribution's entry point.
            self._origin.pop(module_name, None)
            return True
        if self.register_origin(module, module_name, "local module", getattr(module, "__file__", "") or "") is None:
            return False
        if not self.get_hookcallers(module):
            # ``os`` or ``this`` would register fine and do nothing: a wrong name.
            self.unregister(module)
            self._fail(
                module_name,
                f"plugin module '{module_name}' ({where}, {getattr(module, '__file__', None) or 'built-in'}) "
                f"defines no detcore hook implementation (a function decorated with @detcore.hookimpl named "
                f"like a hook, e.g. detcore_backbones); it is not a detcore plugin. Check the module name.",
            )
            return False
        return True

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
