"""``detcore plugins``: what is installed and who provides it; ``--check``
validates every plugin against the hook specs and the run-file rules."""

from __future__ import annotations

import argparse
import inspect

from detcore.catalog import KINDS

_REGISTRATION_HOOKS = set(KINDS.values())


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help="load every plugin, check its hook implementations against the hook specs and its "
        "components' signatures against the run-file rules; report problems per plugin, exit 1",
    )


def run(args) -> int:
    pm, catalog = args.pm, args.catalog
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
