"""The component catalog: every backbone, neck, head, detector, dataset, transform,
metric, runner hook and CLI command that the loaded plugins provide, with who
provided it.

This module is light (no torch): ``detcore config check`` and ``detcore
plugins`` use it without importing any model code.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import attrs

from detcore.errors import ConfigCheckError, PluginError, RunFileError, did_you_mean, shorten

# kind -> registration hook name. The order is the order ``detcore plugins``
# prints them in.
KINDS: dict[str, str] = {
    "backbone": "detcore_backbones",
    "neck": "detcore_necks",
    "head": "detcore_heads",
    "detector": "detcore_detectors",
    "dataset": "detcore_datasets",
    "transform": "detcore_transforms",
    "metric": "detcore_metrics",
    "runner_hook": "detcore_runner_hooks",
    "command": "detcore_commands",
}

# Components that detcore's own distributions provide, so that a run file
# naming one when it is not installed says what to install.
KNOWN_PROVIDERS: dict[tuple[str, str], str] = {
    ("dataset", "coco"): "detcore-coco",
    ("metric", "coco"): "detcore-coco",
    ("command", "coco"): "detcore-coco",
    ("dataset", "voc"): "detcore-voc",
    ("metric", "voc"): "detcore-voc",
    ("runner_hook", "ema"): "detcore-hooks",
    ("runner_hook", "early_stopping"): "detcore-hooks",
    ("runner_hook", "progress"): "detcore-hooks",
    ("runner_hook", "tensorboard"): "detcore-hooks",
    ("runner_hook", "visualize"): "detcore-hooks",
    ("runner_hook", "freeze"): "detcore-hooks",
    ("runner_hook", "profiler"): "detcore-hooks",
    ("runner_hook", "check_finite"): "detcore-hooks",
}


@attrs.frozen
class Command:
    """A CLI subcommand contributed by a plugin (see ``detcore_commands``)."""

    help: str
    configure: Callable[[Any], None]
    run: Callable[[Any], int]


@attrs.frozen
class SubKind:
    """Marker inside ``Annotated[dict, SubKind(...)]``: a nested component table."""

    kind: str
    provided: tuple[str, ...] = ()


class Sub:
    """Type hint for a factory parameter that takes a nested component table.

    ``backbone: Sub["backbone"]`` takes ``{type = "resnet", depth = 50}``; the
    table is validated as a backbone and passed to the factory as a
    :class:`Spec`. Names after the kind are arguments the factory itself
    passes when it builds the spec, so the run file need not give them:
    ``neck: Sub["neck", "in_channels"]``.
    """

    def __class_getitem__(cls, item):
        kind, *provided = item if isinstance(item, tuple) else (item,)
        if kind not in KINDS:
            raise TypeError(f"Sub[{kind!r}]: unknown component kind; use one of {', '.join(KINDS)}")
        return Annotated[dict, SubKind(kind, tuple(provided))]


def check_with(check: Callable[[dict, CheckContext], None]):
    """Attach a check to a factory, run by ``detcore config check`` and before
    training: ``check(args, ctx)`` gets the table's arguments (nested tables
    as dicts) and raises ``detcore.ConfigCheckError(message, key)`` for
    values the signature alone cannot reject (e.g. channel counts that
    must agree between a backbone and a neck)."""

    def decorate(factory):
        factory.__detcore_check__ = check
        return factory

    return decorate


@attrs.frozen
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str
    version: str

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"


@attrs.frozen
class CheckContext:
    """What a component check gets besides its arguments."""

    catalog: Catalog
    path: str


class Spec:
    """A validated component table, built on demand: ``spec(**extra_args)``.

    Factories receive nested tables (parameters typed ``Sub[...]``) as specs,
    so a detector decides when to build its neck and with which
    ``in_channels``.
    """

    def __init__(self, catalog: Catalog, kind: str, table: dict, path: str):
        self.catalog = catalog
        self.kind = kind
        self.table = dict(table)
        self.path = path
        self.component = catalog.get(kind, table["type"], key=f"{path}.type")

    @property
    def type(self) -> str:
        return self.table["type"]

    @property
    def args(self) -> dict:
        return {k: v for k, v in self.table.items() if k != "type"}

    def __call__(self, **extra: Any) -> Any:
        return self.catalog.build(self.kind, self.table, path=self.path, **extra)

    def __repr__(self) -> str:
        return f"Spec({self.kind}, {self.table!r})"


class Catalog:
    """Components by kind and name, built from a plugin manager."""

    def __init__(self, components: list[Component]):
        self._by_kind: dict[str, dict[str, list[Component]]] = {k: {} for k in KINDS}
        for c in components:
            self._by_kind.setdefault(c.kind, {}).setdefault(c.name, []).append(c)

    @classmethod
    def from_plugin_manager(cls, pm) -> Catalog:
        """The components every registered plugin provides. A plugin whose
        registration hook fails raises :class:`PluginError`, or, on a
        non-strict plugin manager (``detcore plugins --check``), is recorded in
        ``pm.problems`` and its components of that kind are left out."""
        strict = getattr(pm, "strict", True)
        components = []
        for kind, hook_name in KINDS.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                # Each plugin's implementation is called on its own so that
                # every component can name the plugin that provided it.
                def fail(message: str, plugin: str = impl.plugin_name) -> None:
                    if strict:
                        raise PluginError(message)
                    pm.problems.setdefault(plugin, []).append(message)

                try:
                    provided = impl.function()
                except Exception as exc:
                    fail(
                        f"plugin '{impl.plugin_name}' ({pm.describe(impl.plugin_name)}) failed in "
                        f"{hook_name}(): {type(exc).__name__}: {exc}. Fix the plugin or block it "
                        f"with '-p no:{impl.plugin_name}'."
                    )
                    continue
                if provided is None:
                    continue
                if not isinstance(provided, dict):
                    fail(
                        f"plugin '{impl.plugin_name}': {hook_name}() must return a dict "
                        f"{{name: factory}}, got {type(provided).__name__}."
                    )
                    continue
                dist, version = pm.distribution_of(impl.plugin_name)
                for name, factory in provided.items():
                    if not callable(factory) and kind != "command":
                        fail(
                            f"plugin '{impl.plugin_name}': {kind} '{name}' is not callable "
                            f"({factory!r})."
                        )
                        continue
                    components.append(
                        Component(kind, str(name), factory, impl.plugin_name, dist, version)
                    )
        return cls(components)

    def __iter__(self) -> Iterator[Component]:
        for names in self._by_kind.values():
            for comps in names.values():
                yield from comps

    def names(self, kind: str) -> list[str]:
        return sorted(self._by_kind.get(kind, {}))

    def get(self, kind: str, name: str, *, key: str | None = None, file: str | None = None) -> Component:
        """Resolve ``name`` (or ``plugin:name``) to one component of ``kind``."""
        by_name = self._by_kind.get(kind, {})
        if ":" in name:
            plugin, _, short = name.partition(":")
            for comp in by_name.get(short, []):
                if plugin in (comp.plugin, comp.distribution):
                    return comp
            providers = sorted(c.plugin for c in by_name.get(short, []))
            hint = (
                f" It is provided by: {', '.join(providers)}."
                if providers
                else f" Installed {kind}s: {', '.join(self.names(kind)) or 'none'}."
            )
            raise RunFileError(
                f"no plugin '{shorten(plugin)}' provides {kind} '{shorten(short)}'.{hint}", file=file, key=key
            )
        comps = by_name.get(name, [])
        if len(comps) == 1:
            return comps[0]
        if len(comps) > 1:
            comps = sorted(comps, key=lambda c: c.plugin)
            who = " and ".join(f"'{c.plugin}' ({c.distribution} {c.version})".strip() for c in comps)
            choices = " or ".join(f"'{c.qualified_name}'" for c in comps)
            count = "two" if len(comps) == 2 else str(len(comps))
            raise RunFileError(
                f"{kind} '{name}' is provided by {count} plugins: {who}. Write {choices} to pick one, "
                f"or block one with '-p no:PLUGIN'.",
                file=file,
                key=key,
            )
        installed = self.names(kind)
        msg = f"unknown {kind} '{shorten(name)}'{did_you_mean(name, installed)}. Installed {kind}s: "
        msg += ", ".join(installed) if installed else "none"
        msg += "."
        provider = KNOWN_PROVIDERS.get((kind, name))
        if provider:
            msg += f" '{name}' is provided by the {provider} distribution: pip install {provider}"
        raise RunFileError(msg, file=file, key=key)

    # ------------------------------------------------------------------
    # validation and building
    # ------------------------------------------------------------------

    def validate(
        self,
        kind: str,
        table: Any,
        path: str,
        *,
        provided: tuple[str, ...] = (),
        file_of: Callable[[str], str | None] = lambda _: None,
    ) -> Component:
        """Check a component table against its factory's signature.

        Raises :class:`RunFileError` naming ``path`` (and the file that set
        it, through ``file_of``) for a missing ``type``, an unknown
        component, unknown or missing arguments, wrongly typed values and
        anything the component's own check rejects.
        """
        if not isinstance(table, dict):
            raise RunFileError(
                f"expected a table with a 'type' key naming a {kind}, got {_describe(table)}",
                file=file_of(path),
                key=path,
            )
        if "type" not in table:
            raise RunFileError(
                f"missing 'type': say which {kind} to use ({', '.join(self.names(kind)) or 'none installed'})",
                file=file_of(path),
                key=path,
            )
        if not isinstance(table["type"], str):
            raise RunFileError(
                f"'type' must be a string, got {_describe(table['type'])}",
                file=file_of(f"{path}.type"),
                key=f"{path}.type",
            )
        comp = self.get(kind, table["type"], key=f"{path}.type", file=file_of(f"{path}.type"))
        params, var_kw = signature_of(comp.factory)
        args = {k: v for k, v in table.items() if k != "type"}
        for key, value in args.items():
            kpath = f"{path}.{key}"
            if key not in params:
                if var_kw:
                    continue
                accepted = [p for p in params if p not in provided]
                raise RunFileError(
                    f"{kind} '{comp.name}' has no argument '{shorten(key)}'{did_you_mean(key, accepted)}. "
                    f"Its arguments are: {', '.join(accepted) or 'none'}.",
                    file=file_of(kpath),
                    key=kpath,
                )
            self._check_value(value, params[key].annotation, kpath, file_of)
        for name, param in params.items():
            if param.default is inspect.Parameter.empty and name not in args and name not in provided:
                raise RunFileError(
                    f"{kind} '{comp.name}' needs argument '{name}'; add it to the table",
                    file=file_of(path),
                    key=path,
                )
        check = getattr(comp.factory, "__detcore_check__", None)
        if check is not None:
            try:
                check(args, CheckContext(self, path))
            except ConfigCheckError as exc:
                kpath = f"{path}.{exc.key}" if exc.key else path
                raise RunFileError(str(exc), file=file_of(kpath), key=kpath) from None
        return comp

    def _check_value(self, value, hint, path, file_of) -> None:
        problem = type_problem(value, hint, lambda kind, provided, v, p: self.validate(
            kind, v, p, provided=provided, file_of=file_of), path)
        if problem:
            raise RunFileError(problem, file=file_of(path), key=path)

    def build(self, kind: str, table: dict, *, path: str = "", **extra: Any) -> Any:
        """Build a component from a (validated) table; ``extra`` are arguments
        the caller provides. Nested ``Sub`` tables become :class:`Spec`s."""
        comp = self.get(kind, table["type"], key=f"{path}.type" if path else "type")
        params, _ = signature_of(comp.factory)
        kwargs = {}
        for key, value in table.items():
            if key == "type":
                continue
            hint = params[key].annotation if key in params else Any
            kwargs[key] = self._to_specs(value, hint, f"{path}.{key}" if path else key)
        kwargs.update(extra)
        try:
            return comp.factory(**kwargs)
        except ConfigCheckError as exc:
            kpath = f"{path}.{exc.key}" if exc.key else path
            raise RunFileError(str(exc), key=kpath or None) from None

    def _to_specs(self, value, hint, path):
        sub = _sub_of(hint)
        if sub is not None and isinstance(value, dict):
            return Spec(self, sub.kind, value, path)
        inner = _list_item_hint(hint)
        if inner is not None and isinstance(value, list):
            return [self._to_specs(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
        return value


# ----------------------------------------------------------------------
# signatures and type hints
# ----------------------------------------------------------------------


def signature_of(factory) -> tuple[dict[str, inspect.Parameter], bool]:
    """Parameters a run-file table may set (hints evaluated where possible) and
    whether the factory takes ``**kwargs``."""
    target = factory
    sig = inspect.signature(target)
    try:
        globalns = vars(inspect.getmodule(factory.__init__ if inspect.isclass(factory) else factory))
    except TypeError:
        globalns = {}
    params: dict[str, inspect.Parameter] = {}
    var_kw = False
    for name, p in sig.parameters.items():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
            continue
        ann = p.annotation
        if isinstance(ann, str):
            try:
                ann = eval(ann, dict(globalns), {})  # noqa: S307 - the plugin's own annotation
            except Exception:
                ann = Any
        if ann is inspect.Parameter.empty:
            ann = Any
        params[name] = p.replace(annotation=ann)
    return params, var_kw


def _sub_of(hint) -> SubKind | None:
    if typing.get_origin(hint) is Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, SubKind):
                return meta
    if _is_union(hint):
        for arg in typing.get_args(hint):
            found = _sub_of(arg)
            if found is not None:
                return found
    return None


def _list_item_hint(hint):
    origin = typing.get_origin(hint)
    if origin in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(hint)
        return args[0] if args else Any
    if _is_union(hint):
        for arg in typing.get_args(hint):
            inner = _list_item_hint(arg)
            if inner is not None:
                return inner
    return None


def _is_union(hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return True
    try:
        import types

        return origin is types.UnionType or isinstance(hint, types.UnionType)
    except AttributeError:  # pragma: no cover - Python < 3.10
        return False


def _describe(value) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({shorten(value)})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({shorten(repr(value))})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _hint_name(hint) -> str:
    if hint is type(None):
        return "nothing (omit the key)"
    if _sub_of(hint) is not None and not _is_union(hint):
        return f"a {_sub_of(hint).kind} table"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if _is_union(hint):
        return " or ".join(_hint_name(a) for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return "an array"
    if origin is dict or hint is dict:
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def type_problem(value, hint, validate_sub, path: str) -> str | None:
    """Why ``value`` does not fit ``hint``, or ``None``. Unknown hints accept
    anything: the check is a help, not a type system."""
    if hint is Any or hint is inspect.Parameter.empty:
        return None
    sub = _sub_of(hint) if not _is_union(hint) else None
    if sub is not None:
        validate_sub(sub.kind, sub.provided, value, path)
        return None
    if _is_union(hint):
        args = typing.get_args(hint)
        # A table for a Sub-typed union member is validated as that kind.
        if isinstance(value, dict):
            found = _sub_of(hint)
            if found is not None:
                validate_sub(found.kind, found.provided, value, path)
                return None
        for arg in args:
            if arg is not type(None) and type_problem(value, arg, validate_sub, path) is None:
                return None
        return f"expected {_hint_name(hint)}, got {_describe(value)}"
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if any(value == c and type(value) is type(c) for c in choices):
            return None
        hint_text = did_you_mean(value, [str(c) for c in choices]) if isinstance(value, str) else ""
        listed = ", ".join(repr(c) for c in choices)
        return f"expected one of {listed}, got {shorten(repr(value))}{hint_text}"
    if origin is Annotated:
        return type_problem(value, typing.get_args(hint)[0], validate_sub, path)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, list):
            return f"expected an array, got {_describe(value)}"
        args = typing.get_args(hint)
        item = args[0] if args else Any
        if origin is tuple:
            item = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        for i, v in enumerate(value):
            p = type_problem(v, item, validate_sub, f"{path}[{i}]")
            if p:
                return f"item {i}: {p}"
        return None
    if origin is dict or hint is dict:
        return None if isinstance(value, dict) else f"expected a table, got {_describe(value)}"
    if hint is bool:
        return None if isinstance(value, bool) else f"expected a boolean (true/false), got {_describe(value)}"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"expected an integer, got {_describe(value)}"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {_describe(value)}"
    if hint is str:
        return None if isinstance(value, str) else f"expected a string, got {_describe(value)}"
    return None
