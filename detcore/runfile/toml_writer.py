"""A small TOML writer for resolved run files (tables, arrays, scalars).

The standard library reads TOML but does not write it; run files hold only
plain data, so this covers all of it.
"""

from __future__ import annotations

import json
import math
import re

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def toml_value(v) -> str:
    """``v`` (number, string, boolean, array or inline table) as a TOML value,
    e.g. for a ``--set KEY=VALUE`` override."""
    return _value(v)


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def dumps(data: dict) -> str:
    """Serialise ``data`` as TOML; ``None`` values are left out (TOML has no null)."""
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _table(data: dict, path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if v is not None and not isinstance(v, dict) and not _is_table_array(v)}
    for k, v in scalars.items():
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            sub = [*path, _key(k)]
            lines.append("")
            lines.append(f"[{'.'.join(sub)}]")
            _table(v, sub, lines)
    for k, v in data.items():
        if _is_table_array(v):
            sub = [*path, _key(k)]
            for item in v:
                lines.append("")
                lines.append(f"[[{'.'.join(sub)}]]")
                _table(item, sub, lines)
