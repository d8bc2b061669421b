"""The component catalog: every backbone, neck, head, detector, dataset, transform,
metric, runner hook and CLI command that the loaded plugins provide, with who
provided it.

This module is light (no torch): ``detcore config check`` and ``detcore
plugins`` use it without importing any model code.
"""

from __future__ import annotations

import collections.abc
import contextlib
import contextvars
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
    must agree between a backbone and a neck).

    ``ctx`` is a :class:`CheckContext`: ``ctx.catalog`` (look up the
    component a nested table names, e.g. its declared output channels),
    ``ctx.path`` (where this table sits: ``model``, ``model.head``) and
    ``ctx.check_child(...)``, which runs a nested table's own check with the
    arguments this component will pass it.

    Arguments the parent passes (the names after the kind in
    ``Sub["head", "in_channels", ...]``) are not in the run-file table, so
    the check cannot see them when the run file is checked on its own; it
    sees them when the parent calls :meth:`CheckContext.check_child` from its
    own check, and again when the parent builds the component (detcore runs
    the check with them before the factory). Write such checks to accept
    the argument being absent (``args.get("in_channels")``). A problem with a
    passed argument is reported at the run-file key it comes from (the
    parent says which, see :meth:`Spec.from_keys`), never at a key the user
    did not write.

    ``key`` in ``ConfigCheckError`` is relative to the table: ``"depth"``,
    ``"neck.in_channels"``."""

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
class MetricKey:
    """Marker inside ``Annotated[str, MetricKey()]``: see :data:`MetricName`."""


MetricName = Annotated[str, MetricKey()]
MetricName.__doc__ = """Type hint for a factory parameter that names a key the run's metrics
return (``metric: detcore.MetricName``, as the ``early_stopping`` hook has):
``detcore config check`` checks the value against the keys the ``[[metrics]]``
declare, with a did-you-mean, as for ``checkpoint.save_best``."""

# What component checks declare during one run-file check (path -> facts);
# None outside one. A context variable, so nested and threaded checks stay apart.
_DECLARED: contextvars.ContextVar[dict[str, dict] | None] = contextvars.ContextVar(
    "detcore_declared", default=None
)


@contextlib.contextmanager
def collecting_declarations() -> Iterator[dict[str, dict]]:
    """Collect what :meth:`CheckContext.declare` records while the block runs."""
    found: dict[str, dict] = {}
    token = _DECLARED.set(found)
    try:
        yield found
    finally:
        _DECLARED.reset(token)


@attrs.frozen
class CheckContext:
    """What a component check gets besides its arguments: the ``catalog``
    (to look up nested components) and the table's key ``path`` in the run
    file (``model``, ``data.train``, ``model.backbone``)."""

    catalog: Catalog
    path: str

    def declare(self, **facts: Any) -> None:
        """Tell the checks *between* tables what this component will be, so
        that ``detcore config check`` catches contradictions before training:

        * a dataset: ``class_names=[...]`` (checked against
          ``model.num_classes``: fewer classes in the model is an error, more
          a warning), ``masks=True/False`` (whether its items carry instance
          masks) and ``masks_key="with_masks"`` (the argument that turns
          them on, named in the error);
        * a detector: ``needs_masks=True`` (it trains on instance masks:
          a training dataset that declares ``masks=False`` is an error);
        * a metric: ``keys=[...]``, the names its ``evaluate`` returns
          (``*`` for names known only from the data: ``"bbox_AP_*"``):
          ``checkpoint.save_best`` and parameters typed
          :data:`MetricName` (``early_stopping``'s ``metric``) must name
          one of them.

        Declare only what the check knows for sure (e.g. class names read
        from the annotation file); an undeclared fact is not checked.
        """
        found = _DECLARED.get()
        if found is not None:
            found.setdefault(self.path, {}).update(facts)

    def check_child(
        self,
        key: str,
        table: Any,
        *,
        kind: str,
        provided: dict[str, Any],
        sources: dict[str, str] | None = None,
    ) -> None:
        """Run the check of this component's nested table ``key`` (of
        ``kind``) with the arguments this component will pass it when it
        builds it (``provided``: ``{"in_channels": 256}``), as the build will.

        ``sources`` names, for each provided argument, the key of *this*
        table it derives from (``{"in_channels": "neck.out_channels"}``), so
        the child's complaint about ``in_channels`` is reported at
        ``model.neck.out_channels`` (the key the user can change) rather
        than at ``model.head.in_channels``, which the run file does not
        have. A table without ``type`` (or not a table) is left alone: the
        signature check reports it.
        """
        if not isinstance(table, dict) or not isinstance(table.get("type"), str):
            return
        comp = self.catalog.get(kind, table["type"])
        check = getattr(comp.factory, "__detcore_check__", None)
        if check is None:
            return
        args = {k: v for k, v in table.items() if k != "type"}
        try:
            check({**args, **provided}, CheckContext(self.catalog, f"{self.path}.{key}" if self.path else key))
        except ConfigCheckError as exc:
            message, where = _blame_passed(exc, comp, key, provided, sources or {})
            raise ConfigCheckError(message, key=where) from None


def _blame_passed(exc: ConfigCheckError, comp: Component, key: str, provided: dict, sources: dict[str, str]):
    """``(message, key relative to the parent)`` for a child's check error:
    a problem with an argument the parent passed is put at the parent's key
    it derives from (``sources``), or at the child's table, saying that the
    value is passed, not written; any other at the child's own key."""
    name = (exc.key or "").split(".")[0]
    if name not in provided:
        return str(exc), ".".join(p for p in (key, exc.key) if p)
    value = shorten(provided[name])
    source = sources.get(name)
    if source is not None:
        return (
            f"{exc} ({comp.kind} '{comp.name}' in '{key}' gets {name} = {value} from '{source}': change "
            f"'{source}' or choose another {comp.kind})",
            source,
        )
    return (
        f"{exc} ({name} = {value} is not set in '{key}': the enclosing component passes it, derived from "
        f"its other settings)",
        key,
    )


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
        self.sources: dict[str, str] = {}

    @property
    def type(self) -> str:
        return self.table["type"]

    @property
    def args(self) -> dict:
        return {k: v for k, v in self.table.items() if k != "type"}

    def __call__(self, **extra: Any) -> Any:
        return self.catalog._build(self.kind, self.table, self.path, extra, self.sources)

    def from_keys(self, **sources: str) -> Spec:
        """Say which key of the parent's table each argument the parent
        passes derives from (``head.from_keys(in_channels="neck.out_channels")``),
        so that a check or factory error about it names that key; returns
        ``self``."""
        self.sources.update(sources)
        return self

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
    # building (checking a table against a factory: detcore.runfile.components)
    # ------------------------------------------------------------------

    def validate(self, kind: str, table: Any, path: str, **kwargs: Any) -> Component:
        """Deprecated: use :func:`detcore.runfile.components.validate_component`
        (the run-file checks live with the run files)."""
        import warnings

        from detcore.runfile.components import validate_component

        warnings.warn(
            "Catalog.validate is deprecated: use detcore.runfile.components.validate_component(catalog, kind, "
            "table, path, ...)",
            DeprecationWarning,
            stacklevel=2,
        )
        return validate_component(self, kind, table, path, **kwargs)

    def build(self, kind: str, table: dict, *, path: str = "", **extra: Any) -> Any:
        """Build a component from a (validated) table; ``extra`` are arguments
        the caller provides. Nested ``Sub`` tables become :class:`Spec`s."""
        return self._build(kind, table, path, extra, {})

    def _build(self, kind: str, table: dict, path: str, extra: dict, sources: dict[str, str]) -> Any:
        comp = self.get(kind, table["type"], key=f"{path}.type" if path else "type")
        params, _ = signature_of(comp.factory)
        parent, _, key = path.rpartition(".")

        def fail(exc: ConfigCheckError) -> RunFileError:
            message, where = _blame_passed(exc, comp, key, extra, sources)
            return RunFileError(message, key=(f"{parent}.{where}" if parent else where) or None)

        check = getattr(comp.factory, "__detcore_check__", None)
        if check is not None and extra:
            # The run-file check ran without the arguments the parent passes;
            # run it again with them before building.
            try:
                check({**{k: v for k, v in table.items() if k != "type"}, **extra}, CheckContext(self, path))
            except ConfigCheckError as exc:
                raise fail(exc) from None
        kwargs = {}
        for name, value in table.items():
            if name == "type":
                continue
            hint = params[name].annotation if name in params else Any
            kwargs[name] = self._to_specs(value, hint, f"{path}.{name}" if path else name)
        kwargs.update(extra)
        try:
            return comp.factory(**kwargs)
        except ConfigCheckError as exc:
            raise fail(exc) from None

    def _to_specs(self, value, hint, path):
        sub = sub_of(hint)
        if sub is not None and isinstance(value, dict):
            return Spec(self, sub.kind, value, path)
        inner = list_item_hint(hint)
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


def sub_of(hint) -> SubKind | None:
    if typing.get_origin(hint) is Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, SubKind):
                return meta
    if is_union(hint):
        for arg in typing.get_args(hint):
            found = sub_of(arg)
            if found is not None:
                return found
    return None


def list_item_hint(hint):
    origin = typing.get_origin(hint)
    if origin in (list, tuple, collections.abc.Sequence):
        args = typing.get_args(hint)
        return args[0] if args else Any
    if is_union(hint):
        for arg in typing.get_args(hint):
            inner = list_item_hint(arg)
            if inner is not None:
                return inner
    return None


def is_union(hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return True
    try:
        import types

        return origin is types.UnionType or isinstance(hint, types.UnionType)
    except AttributeError:  # pragma: no cover - Python < 3.10
        return False
