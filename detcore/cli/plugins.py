"""``detcore plugins``: what is installed and who provides it; ``--check``
validates every plugin against the hook specs and the run-file rules."""

from __future__ import annotations

import argparse
import inspect

from detcore.catalog import KINDS

_REGISTRATION_HOOKS = set(KINDS.values())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="a component (fcos, coco, early_stopping, or plugin:name): show its arguments with "
        "their types and defaults, and its documentation",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="load every plugin, check its hook implementations against the hook specs and its "
        "components' signatures against the run-file rules; report problems per plugin, exit 1",
    )


def run(args) -> int:
    pm, catalog = args.pm, args.catalog
    if args.name:
        print(describe(catalog, args.name, pm))
        return 0
    by_plugin: dict[str, dict[str, list[str]]] = {}
    for comp in catalog:
        by_plugin.setdefault(comp.plugin, {}).setdefault(comp.kind, []).append(comp.name)
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist, version = pm.distribution_of(name)
        print(f"{name}  ({dist} {version})".rstrip())
        kinds = by_plugin.get(name, {})
        for kind in KINDS:
            if kind in kinds:
                print(f"    {kind + 's':13} {', '.join(sorted(kinds[kind]))}")
        runtime = sorted(
            h.name for h in pm.get_hookcallers(plugin) or [] if h.name not in _REGISTRATION_HOOKS
        )
        if runtime:
            print(f"    {'hooks':13} {', '.join(runtime)}")
    if not args.check:
        return 0
    problems = check_plugins(pm, catalog)
    if not problems:
        print("\nall plugins check out")
        return 0
    print(f"\nproblems ({sum(len(v) for v in problems.values())}):")
    for plugin, messages in problems.items():
        print(f"  {plugin} ({pm.describe(plugin) or 'not loaded'}):")
        for m in messages:
            print(f"    - {m}")
    return 1


def check_plugins(pm, catalog) -> dict[str, list[str]]:
    """Problems per plugin: what failed to load or register (collected by a
    non-strict plugin manager in ``pm.problems``), hook implementations that
    match no spec or take arguments the spec does not have, and components
    whose signatures the run-file check cannot rely on."""
    problems: dict[str, list[str]] = {k: list(v) for k, v in getattr(pm, "problems", {}).items()}

    def add(plugin: str, message: str) -> None:
        problems.setdefault(plugin, []).append(message)

    specs = {
        name: caller.spec.argnames
        for name, caller in vars(pm.hook).items()
        if not name.startswith("_") and caller.has_spec()
    }
    for comp in catalog:
        what = f"{comp.kind} '{comp.name}'"
        if comp.kind == "command":
            if not all(hasattr(comp.factory, a) for a in ("help", "configure", "run")):
                add(comp.plugin, f"{what} is not a detcore.Command(help, configure, run)")
            continue
        for message in _signature_problems(comp.factory):
            add(comp.plugin, f"{what}: {message}")
        if comp.kind == "runner_hook" and inspect.isclass(comp.factory):
            for message in _hook_method_problems(comp.factory, pm.project_name, specs):
                add(comp.plugin, f"{what}: {message}")
    return problems


def _signature_problems(factory) -> list[str]:
    from detcore.catalog import signature_of

    try:
        sig = inspect.signature(factory)
        signature_of(factory)
    except (TypeError, ValueError) as exc:
        return [f"has no inspectable signature ({exc}); run-file tables cannot be checked"]
    out = []
    hints = _raw_hints(factory)
    for pname, p in sig.parameters.items():
        if p.kind is p.POSITIONAL_ONLY:
            out.append(f"parameter '{pname}' is positional-only; run-file tables pass keyword arguments")
        if isinstance(p.annotation, str) and pname not in hints:
            out.append(
                f"the type hint of parameter '{pname}' ({p.annotation!r}) cannot be evaluated, so "
                "run-file values for it are not checked; use hints from typing and detcore.Sub"
            )
    return out


def _raw_hints(factory) -> dict:
    """Parameter hints that evaluate in the factory's module (names only)."""
    import typing

    from detcore.catalog import signature_of

    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        # Fall back to detcore's own evaluation, parameter by parameter.
        params, _ = signature_of(factory)
        raw = inspect.signature(factory).parameters
        return {
            k: p.annotation
            for k, p in params.items()
            if not (isinstance(raw[k].annotation, str) and p.annotation is typing.Any)
        }


def _hook_method_problems(cls, project: str, specs: dict[str, tuple[str, ...]]) -> list[str]:
    """Runner-hook classes are registered only when a run starts: check their
    ``@hookimpl`` methods now, the way pluggy will then."""
    from detcore.errors import did_you_mean

    out = []
    for attr, method in inspect.getmembers(cls, callable):
        marked = getattr(method, f"{project}_impl", None) is not None
        if not marked:
            if attr in specs:
                out.append(f"method '{attr}' lacks @detcore.hookimpl, so it is never called")
            continue
        if attr not in specs:
            out.append(f"implements unknown hook '{attr}'{did_you_mean(attr, specs)}")
            continue
        argnames = [
            n
            for n, p in inspect.signature(method).parameters.items()
            if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        extra = [a for a in argnames if a not in specs[attr]]
        if extra:
            out.append(
                f"hook '{attr}' takes argument(s) {', '.join(extra)} that the spec does not have "
                f"(the spec's arguments: {', '.join(specs[attr])})"
            )
    return out


def describe(catalog, name: str, pm=None) -> str:
    """Every component called ``name`` (``plugin:name`` picks one plugin's):
    its kind, provider, documentation and a table of the arguments a run-file
    table may give, with types and defaults."""
    from detcore.errors import DetcoreError, did_you_mean

    plugin, _, short = name.rpartition(":")
    found = [c for c in catalog if c.name == short and (not plugin or c.plugin == plugin)]
    if not found:
        names = sorted({c.name for c in catalog if c.kind != "command"})
        raise DetcoreError(
            f"no installed component is named '{name}'{did_you_mean(short, names)}. "
            f"Run 'detcore plugins' for the list."
        )
    return "\n\n".join(_describe_component(c, pm) for c in found)


def _describe_component(comp, pm) -> str:
    from detcore.runfile.toml_writer import _value

    origin = f"{comp.distribution} {comp.version}".strip()
    head = f"{comp.name}  ({comp.kind} from plugin {comp.plugin}, {origin})"
    if comp.kind == "command":
        return f"{head}\n\n    {comp.factory.help}\n\n    detcore {comp.name} --help shows its options."
    doc = inspect.getdoc(comp.factory.__init__ if inspect.isclass(comp.factory) else comp.factory) or ""
    if inspect.isclass(comp.factory) and not doc.strip():
        doc = inspect.getdoc(comp.factory) or ""
    lines = [head, ""]
    lines += [f"    {ln}".rstrip() for ln in (doc.strip() or "(no docstring)").splitlines()]
    rows, provided = _argument_rows(comp.factory, _value)
    if rows:
        widths = [max(len(r[i]) for r in [("argument", "type", "default"), *rows]) for i in range(2)]
        lines += ["", f"    {'argument':<{widths[0]}}  {'type':<{widths[1]}}  default"]
        lines += [f"    {a:<{widths[0]}}  {t:<{widths[1]}}  {d}" for a, t, d in rows]
    else:
        lines += ["", "    (no arguments)"]
    if provided:
        lines += ["", "    Passed by the parent component, not set in a run file: " + ", ".join(provided)]
    if comp.kind in ("detector", "backbone", "neck", "head", "dataset", "transform", "metric", "runner_hook"):
        key = {"runner_hook": "[[hooks]]", "metric": "[[metrics]]", "dataset": "[data.train]",
               "detector": "[model]"}.get(comp.kind)
        if key:
            lines += ["", f"    In a run file: {key} with type = \"{comp.name}\""]
    return "\n".join(lines)


def _argument_rows(factory, toml_value) -> tuple[list[tuple[str, str, str]], list[str]]:
    from detcore.catalog import signature_of, sub_of

    params, var_kw = signature_of(factory)
    rows = []
    for pname, p in params.items():
        hint = p.annotation
        sub = sub_of(hint)
        kind = type_text(hint)
        if sub is not None and sub.provided:
            kind += f" (its {', '.join(sub.provided)} come from this component)"
        if p.default is inspect.Parameter.empty:
            default = "required"
        elif p.default is None:
            default = "unset"
        else:
            try:
                default = toml_value(p.default)
            except TypeError:
                default = repr(p.default)
        rows.append((pname, kind, default))
    if var_kw:
        rows.append(("...", "any other key", "(passed on as keyword arguments)"))
    return rows, []


def type_text(hint) -> str:
    """A factory parameter's type as a run-file writer reads it: ``integer``,
    ``array of string``, ``"bbox" / "segm"``, ``backbone table``; ``None``
    in a union is left out (the key can be omitted)."""
    import typing

    from detcore.catalog import is_union, sub_of

    if hint is inspect.Parameter.empty or hint is typing.Any:
        return "any"
    sub = sub_of(hint)
    if sub is not None and not is_union(hint):
        return f"{sub.kind} table"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        from detcore.catalog import MetricKey

        if any(isinstance(m, MetricKey) for m in hint.__metadata__):
            return "string (a metric's key)"
        return type_text(args[0])
    if origin is typing.Literal:
        return " / ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if is_union(hint):
        return " or ".join(type_text(a) for a in args if a is not type(None))
    if origin in (list, tuple) or hint in (list, tuple):
        inner = [a for a in args if a is not Ellipsis]
        return "array" + (f" of {type_text(inner[0])}" if len(set(inner)) == 1 else "")
    if origin is dict or hint is dict:
        return "table"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(hint, getattr(hint, "__name__", str(hint)))
