"""From merged run-file data to a validated :class:`RunConfig`.

Two passes, both before anything heavy is imported: the top level is
structured into attrs classes (unknown keys, types, validators), then every
component table is checked against its factory's signature in the catalog.
"""

from __future__ import annotations

import typing

import attrs

from detcore.catalog import Catalog
from detcore.errors import ConfigCheckError, RunFileError, did_you_mean, shorten
from detcore.runfile.components import type_problem, validate_component
from detcore.runfile.loader import RawRunFile
from detcore.runfile.schema import RunConfig


def structure(cls, data, raw: RawRunFile, prefix: str = ""):
    """Build attrs class ``cls`` from ``data``, raising :class:`RunFileError`
    with the key path and file for the first problem."""
    if not isinstance(data, dict):
        raise RunFileError(f"expected a table, got {type(data).__name__}", file=raw.file_of(prefix), key=prefix or None)
    fields = {f.name: f for f in attrs.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        field = fields.get(key)
        if field is None:
            raise RunFileError(
                f"unknown key '{shorten(key)}'{did_you_mean(key, fields)}. "
                f"Valid keys{' in [' + shorten(prefix) + ']' if prefix else ' at the top level'}: {', '.join(fields)}.",
                file=raw.file_of(path),
                key=path,
            )
        hint = hints[key]
        if attrs.has(hint):
            kwargs[key] = structure(hint, value, raw, path)
            continue
        if "component" in field.metadata:
            # A component table: its shape is checked against the catalog later.
            if field.metadata.get("many"):
                if not isinstance(value, list):
                    raise RunFileError(
                        f"expected an array of tables ([[{path}]] sections), got {type(value).__name__}",
                        file=raw.file_of(path),
                        key=path,
                    )
            kwargs[key] = value
            continue
        problem = type_problem(value, hint, lambda *a: None, path)
        if problem:
            raise RunFileError(problem, file=raw.file_of(path), key=path)
        if field.validator is not None:
            try:
                field.validator(None, field, value)
            except (ValueError, TypeError) as exc:
                raise RunFileError(str(exc), file=raw.file_of(path), key=path) from None
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigCheckError as exc:
        path = f"{prefix}.{exc.key}" if prefix and exc.key else (exc.key or prefix)
        raise RunFileError(str(exc), file=raw.file_of(path), key=path or None) from None
    except (ValueError, TypeError) as exc:  # pragma: no cover - validators run above
        raise RunFileError(str(exc), file=raw.file_of(prefix), key=prefix or None) from None


def check_components(
    cfg: RunConfig,
    raw: RawRunFile,
    catalog: Catalog,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> None:
    """Check every component table of ``cfg`` against the catalog (of the
    dataset tables, those of ``splits``: ``predict`` needs no dataset files)."""
    if cfg.model is None:
        raise RunFileError(
            "missing [model] table: name a detector with type = \"...\" "
            f"(installed: {', '.join(catalog.names('detector')) or 'none'})",
            file=str(raw.path),
            key="model",
        )
    validate_component(catalog, "detector", cfg.model, "model", file_of=raw.file_of)
    for split in splits:
        table = getattr(cfg.data, split)
        if table is not None:
            validate_component(catalog, "dataset", table, f"data.{split}", file_of=raw.file_of)
    for i, table in enumerate(cfg.metrics):
        validate_component(catalog, "metric", table, f"metrics[{i}]", file_of=raw.file_of)
    for i, table in enumerate(cfg.hooks):
        validate_component(catalog, "runner_hook", table, f"hooks[{i}]", file_of=raw.file_of)


def resolved_dict(cfg: RunConfig, catalog: Catalog | None = None) -> dict:
    """The run file with every default filled in, as plain data: the top
    level's, and with ``catalog``, every component table's (nested ones
    too) from its factory's signature."""
    data = attrs.asdict(cfg, recurse=True)
    if catalog is None:
        return data
    data["model"] = fill_defaults(catalog, "detector", data["model"])
    for split in ("train", "val", "test"):
        if data["data"].get(split) is not None:
            data["data"][split] = fill_defaults(catalog, "dataset", data["data"][split])
    data["metrics"] = [fill_defaults(catalog, "metric", t) for t in data["metrics"]]
    data["hooks"] = [fill_defaults(catalog, "runner_hook", t) for t in data["hooks"]]
    return data


def fill_defaults(catalog: Catalog, kind: str, table):
    """``table`` (a validated component table of ``kind``) with the factory's
    default for every argument it does not set, nested tables filled the
    same way; ``type`` first, then the factory's parameters in order.
    Defaults that are not plain data (or ``None``: "unset") are left out,
    so the result is a run file that resolves to the same thing."""
    from detcore.catalog import list_item_hint, signature_of, sub_of

    if not isinstance(table, dict) or not isinstance(table.get("type"), str):
        return table
    factory = catalog.get(kind, table["type"]).factory
    params, _ = signature_of(factory)
    out = {"type": table["type"]}
    for name, p in params.items():
        if name in table:
            value = table[name]
        elif p.default is not p.empty and _plain(p.default):
            value = list(p.default) if isinstance(p.default, tuple) else p.default
        else:
            continue
        sub = sub_of(p.annotation)
        item = sub_of(list_item_hint(p.annotation)) if list_item_hint(p.annotation) is not None else None
        if sub is not None and isinstance(value, dict):
            if kind == "detector" and name == "backbone" and isinstance(value.get("type"), str):
                # A detector's own defaults for its backbone come before the
                # backbone factory's (fcos takes ResNet's C3-C5): filling the
                # factory's would make resolved.toml build another model.
                from detcore.models.names import dense_backbone_defaults

                comp = catalog.get("backbone", value["type"])
                value = {**value, **dense_backbone_defaults(table["type"], comp.plugin, comp.name, value)}
            value = fill_defaults(catalog, sub.kind, value)
        elif item is not None and isinstance(value, list):
            value = [fill_defaults(catalog, item.kind, v) for v in value]
        out[name] = value
    out.update({k: v for k, v in table.items() if k not in out})  # **kwargs factories
    return out


def _plain(value) -> bool:
    if isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
