"""Checking run-file values against type hints and component tables against
their factories' signatures: what ``detcore config check`` reports before
anything heavy is imported.

:func:`validate_component` checks one ``{type = "...", ...}`` table (and its
nested component tables) against the factory the catalog holds for it;
:func:`type_problem` says why a value does not fit a hint (``int``,
``float``, ``str``, ``bool``, ``list[...]``, ``Literal[...]``, ``X | None``,
``detcore.Sub[...]``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

from detcore.catalog import Catalog, CheckContext, Component, is_union, signature_of, sub_of
from detcore.errors import ConfigCheckError, RunFileError, did_you_mean, shorten

__all__ = ["describe", "hint_name", "type_problem", "validate_component"]


def validate_component(
    catalog: Catalog,
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
            f"expected a table with a 'type' key naming a {kind}, got {describe(table)}",
            file=file_of(path),
            key=path,
        )
    if "type" not in table:
        raise RunFileError(
            f"missing 'type': say which {kind} to use ({', '.join(catalog.names(kind)) or 'none installed'})",
            file=file_of(path),
            key=path,
        )
    if not isinstance(table["type"], str):
        raise RunFileError(
            f"'type' must be a string, got {describe(table['type'])}",
            file=file_of(f"{path}.type"),
            key=f"{path}.type",
        )
    comp = catalog.get(kind, table["type"], key=f"{path}.type", file=file_of(f"{path}.type"))
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
        _check_value(catalog, value, params[key].annotation, kpath, file_of)
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
            check(args, CheckContext(catalog, path))
        except ConfigCheckError as exc:
            kpath = f"{path}.{exc.key}" if exc.key else path
            raise RunFileError(str(exc), file=file_of(kpath), key=kpath) from None
    return comp

def _check_value(self, value, hint, path, file_of) -> None:
    problem = type_problem(value, hint, lambda kind, provided, v, p: self.validate(
        kind, v, p, provided=provided, file_of=file_of), path)
    if problem:
        raise RunFileError(problem, file=file_of(path), key=path)


def _check_value(catalog: Catalog, value, hint, path, file_of) -> None:
    problem = type_problem(value, hint, lambda kind, provided, v, p: validate_component(
        catalog, kind, v, p, provided=provided, file_of=file_of), path)
    if problem:
        raise RunFileError(problem, file=file_of(path), key=path)


def describe(value) -> str:
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


def hint_name(hint) -> str:
    if hint is type(None):
        return "nothing (omit the key)"
    if sub_of(hint) is not None and not is_union(hint):
        return f"a {sub_of(hint).kind} table"
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if is_union(hint):
        return " or ".join(hint_name(a) for a in typing.get_args(hint) if a is not type(None))
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
    sub = sub_of(hint) if not is_union(hint) else None
    if sub is not None:
        validate_sub(sub.kind, sub.provided, value, path)
        return None
    if is_union(hint):
        args = typing.get_args(hint)
        # A table for a Sub-typed union member is validated as that kind.
        if isinstance(value, dict):
            found = sub_of(hint)
            if found is not None:
                validate_sub(found.kind, found.provided, value, path)
                return None
        for arg in args:
            if arg is not type(None) and type_problem(value, arg, validate_sub, path) is None:
                return None
        return f"expected {hint_name(hint)}, got {describe(value)}"
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
            return f"expected an array, got {describe(value)}"
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
        return None if isinstance(value, dict) else f"expected a table, got {describe(value)}"
    if hint is bool:
        return None if isinstance(value, bool) else f"expected a boolean (true/false), got {describe(value)}"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else f"expected an integer, got {describe(value)}"
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {describe(value)}"
    if hint is str:
        return None if isinstance(value, str) else f"expected a string, got {describe(value)}"
    return None
