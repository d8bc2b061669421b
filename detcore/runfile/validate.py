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


def resolved_dict(cfg: RunConfig) -> dict:
    """The run file with every default filled in, as plain data."""
    return attrs.asdict(cfg, recurse=True)
