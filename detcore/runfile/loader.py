"""Reading run files: TOML, ``extends``, deep merge and ``--set`` overrides.

A run file never executes code: it is parsed with tomllib and merged as data.
Every value remembers the file (or ``--set``) it came from so that errors can
name it.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import attrs

from detcore.errors import RunFileError, did_you_mean, shorten

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SET_ORIGIN = "--set"

# Limits that turn hostile or runaway run files into a named error instead of
# a RecursionError: real run files extend a few bases and nest tables and
# arrays five or six levels deep.
MAX_EXTENDS = 32  # files in one ``extends`` chain
MAX_NESTING = 32  # tables and arrays inside each other
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


@attrs.frozen
class RawRunFile:
    """The merged data of a run file, before validation."""

    path: Path
    data: dict
    origins: dict  # dotted key path -> file (or "--set") that set it

    def file_of(self, key: str) -> str:
        """The file that set ``key`` (or its closest parent)."""
        k = key
        while k:
            if k in self.origins:
                return self.origins[k]
            k = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", k) if ("." in k or "[" in k) else ""
        return str(self.path)


def read_toml(path: Path, text: str | None = None) -> dict:
    """The run file at ``path`` as data (``text``: that TOML instead of the
    file's, with ``path`` naming it in errors)."""
    try:
        if text is None:
            text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFileError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise RunFileError("is a directory, expected a .toml run file", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise RunFileError(f"not UTF-8 text ({exc.reason})", file=str(path)) from None
    data = parse_toml(text, str(path))
    deep = too_deep(data)
    if deep is not None:
        raise RunFileError(_nesting_message(), file=str(path), key=deep)
    return data


def parse_toml(text: str, file: str) -> dict:
    """``tomllib.loads`` with its errors (and its recursion on deeply
    nested arrays) as :class:`RunFileError` naming ``file``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RunFileError(f"invalid TOML: {exc}", file=file) from None
    except RecursionError:
        raise RunFileError(_nesting_message(), file=file) from None


def _nesting_message() -> str:
    return (
        f"tables and arrays are nested more than {MAX_NESTING} levels deep; a run file needs a few "
        f"levels (model.backbone.depth, data.train.transforms[0].size)"
    )


def too_deep(value: Any, limit: int = MAX_NESTING) -> str | None:
    """The key path of the first value nested deeper than ``limit`` tables
    and arrays, or ``None``. Iterative, so that it cannot recurse too deep itself."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return path or None
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                sub = f"{path}[{k}]" if isinstance(node, list) else (f"{path}.{shorten(k, 40)}" if path else shorten(k, 40))
                stack.append((v, sub, depth + 1))
    return None


def load_raw(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, text: str | None = None
) -> RawRunFile:
    """Read ``path`` with its ``extends`` chain and apply ``--set`` overrides.

    With ``text``, that TOML is parsed instead of the file (the run file a
    checkpoint carries); ``path`` then only names it in errors."""
    path = Path(path)
    origins: dict[str, str] = {}
    data = _load_with_bases(path, [], origins, text=text)
    for item in overrides:
        apply_override(data, item, origins)
    return RawRunFile(path=path, data=data, origins=origins)


def _load_with_bases(path: Path, stack: list[Path], origins: dict, *, text: str | None = None) -> dict:
    resolved = path.resolve()
    if len(stack) >= MAX_EXTENDS:
        raise RunFileError(
            f"'extends' chains more than {MAX_EXTENDS} files ({stack[0]} -> {stack[1]} -> ... -> {path}); "
            f"a run file extends a few bases, each of which may extend others: flatten the chain",
            file=str(stack[-1]),
            key="extends",
        )
    if resolved in stack:
        chain = " -> ".join(str(p) for p in [*stack, resolved])
        raise RunFileError(
            f"'extends' forms a cycle: {chain}. Remove one of the links.",
            file=str(stack[-1]),
            key="extends",
        )
    data = read_toml(path, text)
    bases = data.pop("extends", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RunFileError(
            "'extends' must be a path or an array of paths (relative to this file)",
            file=str(path),
            key="extends",
        )
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            raise RunFileError(
                f"base run file '{shorten(base)}' not found (looked for {shorten(base_path)}); paths in 'extends' "
                f"are relative to the file that names them.",
                file=str(path),
                key="extends",
            )
        merge(merged, _load_with_bases(base_path, [*stack, resolved], origins))
    _record(data, "", str(path), origins)
    merge(merged, data)
    return merged


def _record(value: Any, prefix: str, file: str, origins: dict) -> None:
    if prefix:
        origins[prefix] = file
    if isinstance(value, dict):
        for k, v in value.items():
            _record(v, f"{prefix}.{k}" if prefix else k, file, origins)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _record(v, f"{prefix}[{i}]", file, origins)


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into ``base`` (in place) and return it.

    Tables merge key by key; arrays and scalars replace. A table whose
    ``type`` differs from the base's, or that says ``_replace_ = true``,
    replaces the base table instead of merging into it (switching a
    backbone from ``resnet`` to ``tiny`` must not keep ``depth``).
    """
    for key, value in update.items():
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            value = dict(value)
            replace = value.pop("_replace_", False) is True
            if replace or ("type" in value and "type" in old and value["type"] != old["type"]):
                base[key] = copy.deepcopy(value)
            else:
                merge(old, value)
        else:
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != "_replace_"}
            base[key] = copy.deepcopy(value)
    return base


# parse_override's value for ``--set KEY=`` (nothing after ``=``): remove KEY.
REMOVE = object()


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=VALUE"`` -> (``["a", "b"]``, parsed VALUE). VALUE is TOML; a bare
    word that is not valid TOML is taken as a string (``--set work_dir=out``);
    nothing after ``=`` gives :data:`REMOVE` (``--set train.max_iters=``)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    shown = shorten(item)
    if not sep or not key:
        raise RunFileError(
            f"bad --set '{shown}': expected KEY=VALUE, e.g. --set optimizer.lr=0.02",
            file=SET_ORIGIN,
        )
    if not _KEY_RE.match(re.sub(r"\[(\d+)\]", r".\1", key)):
        raise RunFileError(
            f"bad --set '{shown}': '{shorten(key)}' is not a dotted key path (letters, digits, _ and -, "
            f"joined by dots, e.g. model.backbone.depth)",
            file=SET_ORIGIN,
        )
    raw = raw.strip()
    key = re.sub(r"\[(\d+)\]", r".\1", key)  # a[0].b is a.0.b
    if not raw:
        return key.split("."), REMOVE
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except RecursionError:
        raise RunFileError(f"bad --set '{shown}': {_nesting_message()}", file=SET_ORIGIN) from None
    except tomllib.TOMLDecodeError as exc:
        if re.fullmatch(r"[A-Za-z0-9_./:+-]+", raw):
            value = raw
        else:
            raise RunFileError(
                f"bad --set '{shown}': the value is not valid TOML ({exc}); quote strings "
                f"(--set {shorten(key)}='\"text\"') and write arrays as [1, 2]",
                file=SET_ORIGIN,
            ) from None
    if too_deep({key: value}) is not None or len(key.split(".")) > MAX_NESTING:
        raise RunFileError(f"bad --set '{shown}': {_nesting_message()}", file=SET_ORIGIN)
    return key.split("."), value


def apply_override(data: dict, item: str, origins: dict) -> None:
    parts, value = parse_override(item)
    node: Any = data
    walked = []
    for part in parts[:-1]:
        walked.append(part)
        if isinstance(node, list):
            node = _list_item(node, part, item, walked)
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, (dict, list)):
            raise RunFileError(
                f"bad --set '{shorten(item)}': '{shorten('.'.join(walked))}' is {type(nxt).__name__} "
                f"{shorten(repr(nxt))}, not a table, so it has no key '{shorten(parts[len(walked)])}'",
                file=SET_ORIGIN,
            )
        node = nxt
    last = parts[-1]
    if value is REMOVE:
        _remove(node, last, item, parts, origins)
        return
    if isinstance(node, list):
        idx = _index(node, last, item, parts)
        node[idx] = value
    else:
        node[last] = value
    _record(value, _display_path(parts), SET_ORIGIN, origins)


def _remove(node, last: str, item: str, parts: list[str], origins: dict) -> None:
    """``--set KEY=``: delete KEY (a key of a table, or an item of an array)
    so that its default applies, e.g. to switch ``train.max_iters`` to
    ``train.max_epochs``."""
    shown = _display_path(parts)
    if isinstance(node, list):
        del node[_index(node, last, item, parts)]
    elif isinstance(node, dict) and last in node:
        del node[last]
    else:
        keys = list(node) if isinstance(node, dict) else []
        raise RunFileError(
            f"bad --set '{item}': there is no key '{shown}' to remove{did_you_mean(last, keys)}"
            + (f" (keys here: {', '.join(keys)})" if keys else ""),
            file=SET_ORIGIN,
        )
    # The removed key and its children no longer come from any file; an
    # array's later items moved up, so their origins are dropped as well.
    under = _display_path(parts[:-1]) if isinstance(node, list) else shown
    for k in [k for k in origins if k == shown or k.startswith((under + ".", under + "["))]:
        del origins[k]


def _index(node: list, part: str, item: str, walked: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RunFileError(
            f"bad --set '{shorten(item)}': '{shorten('.'.join(walked))}' is an array of {len(node)} items; "
            f"index it with 0..{len(node) - 1}",
            file=SET_ORIGIN,
        )
    return int(part)


def _list_item(node: list, part: str, item: str, walked: list[str]):
    return node[_index(node, part, item, walked)]


def _display_path(parts: list[str]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() and out else (f".{p}" if out else p)
    return out
