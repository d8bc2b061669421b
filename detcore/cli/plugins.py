"""``detcore plugins``: what is installed and who provides it."""

from __future__ import annotations

import argparse

from detcore.catalog import KINDS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help="also check every component's signature and hook implementations; exit 1 on problems",
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
            h.name for h in pm.get_hookcallers(plugin) or [] if h.name[len("detcore_"):] not in
            {v[len("detcore_"):] for v in KINDS.values()}
        )
        if runtime:
            print(f"    {'hooks':13} {', '.join(runtime)}")
    problems = check_plugins(pm, catalog) if args.check else []
    for p in problems:
        print(f"problem: {p}")
    if args.check:
        print(f"{len(problems)} problem(s) found" if problems else "all plugins check out")
    return 1 if problems else 0


def check_plugins(pm, catalog) -> list[str]:
    """Problems with installed components that the run-file checks rely on."""
    import inspect

    from detcore.catalog import signature_of

    problems = []
    for comp in catalog:
        if comp.kind == "command":
            for attr in ("help", "configure", "run"):
                if not hasattr(comp.factory, attr):
                    problems.append(f"{comp.plugin}: command '{comp.name}' is not a detcore.Command")
                    break
            continue
        try:
            signature_of(comp.factory)
        except (TypeError, ValueError) as exc:
            problems.append(
                f"{comp.plugin}: {comp.kind} '{comp.name}' has no inspectable signature ({exc})"
            )
            continue
        params = inspect.signature(comp.factory).parameters
        for pname, p in params.items():
            if p.kind is p.POSITIONAL_ONLY:
                problems.append(
                    f"{comp.plugin}: {comp.kind} '{comp.name}' parameter '{pname}' is positional-only; "
                    "run-file tables pass keyword arguments"
                )
    return problems
