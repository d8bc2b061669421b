"""Checks between the tables of a run file, after each table has passed its
own: the names ``checkpoint.save_best`` and runner hooks give for metrics
against the keys the metrics return, ``model.num_classes`` against the
datasets' classes, and a detector that trains on masks against datasets
that load none. What ``detcore config check`` (and every command, before
anything heavy) reports, instead of a failure after training has started.

Components tell these checks what they know through their own checks
(:meth:`detcore.CheckContext.declare`, collected by
:func:`detcore.catalog.collecting_declarations`): a dataset its ``class_names`` and
whether its items carry ``masks``, a detector that it ``needs_masks``,
a metric the ``keys`` its ``evaluate`` returns.
"""

from __future__ import annotations

import fnmatch
import typing

from detcore.catalog import Catalog, MetricKey, signature_of
from detcore.errors import RunFileError, did_you_mean


def crosscheck(cfg, raw, catalog: Catalog, facts: dict[str, dict], splits: tuple[str, ...]) -> list[str]:
    """Raise :class:`RunFileError` for a run file whose tables contradict
    each other; return warnings (one paragraph each) for what will work but
    is probably not meant."""
    warnings: list[str] = []
    keys = metric_keys(cfg, facts)
    _check_metric_names(cfg, raw, catalog, keys, warnings)
    _check_classes(cfg, raw, facts, splits, warnings)
    _check_masks(cfg, raw, facts, splits)
    return warnings


# ----------------------------------------------------------------------
# metric names
# ----------------------------------------------------------------------


def metric_keys(cfg, facts: dict[str, dict]) -> list[str] | None:
    """The keys the run's ``[[metrics]]`` declared they return (``*``
    wildcards for names that depend on the data, e.g. per-class APs), or
    ``None`` when a metric declares none."""
    out: list[str] = []
    for i in range(len(cfg.metrics)):
        declared = facts.get(f"metrics[{i}]", {}).get("keys")
        if declared is None:
            return None
        out.extend(str(k) for k in declared)
    return out


def _matches(name: str, keys: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, k) for k in keys)


def _check_name(name: str, keys: list[str], path: str, raw, what: str) -> None:
    if _matches(name, keys):
        return
    plain = [k for k in keys if "*" not in k]
    patterns = [k for k in keys if "*" in k]
    raise RunFileError(
        f"{what} '{name}' is not a key the run's [[metrics]] return{did_you_mean(name, plain)}. "
        f"They return: {', '.join(plain) or 'none'}"
        + (f" (and names matching {', '.join(patterns)})" if patterns else "")
        + ".",
        file=raw.file_of(path),
        key=path,
    )


def _check_metric_names(cfg, raw, catalog: Catalog, keys: list[str] | None, warnings: list[str]) -> None:
    named = []  # (value, key path, what)
    if cfg.checkpoint.save_best is not None:
        named.append((cfg.checkpoint.save_best, "checkpoint.save_best", "checkpoint.save_best"))
    for i, table in enumerate(cfg.hooks):
        factory = catalog.get("runner_hook", table["type"]).factory
        params, _ = signature_of(factory)
        for pname, p in params.items():
            if _is_metric_name(p.annotation) and isinstance(table.get(pname), str):
                named.append((table[pname], f"hooks[{i}].{pname}", f"hook '{table['type']}' {pname}"))
    if not named:
        return
    if not cfg.metrics:
        listed = ", ".join(path for _, path, _ in named)
        warnings.append(
            f"{listed} name(s) a metric, but the run file has no [[metrics]] table: nothing is "
            f"evaluated, so no best checkpoint is kept and nothing stops early. Add a [[metrics]] table."
        )
        return
    if keys is None:
        return  # a metric that does not declare its keys: cannot tell
    for name, path, what in named:
        _check_name(name, keys, path, raw, what)


def _is_metric_name(hint) -> bool:
    if typing.get_origin(hint) is typing.Annotated:
        return any(isinstance(m, MetricKey) for m in hint.__metadata__)
    return any(_is_metric_name(a) for a in typing.get_args(hint))


# ----------------------------------------------------------------------
# classes and masks
# ----------------------------------------------------------------------


def _dataset_facts(facts: dict[str, dict], split: str) -> tuple[str, dict]:
    """The key path and the facts of the dataset table of ``split``, or of
    the dataset it wraps (``repeat``, ``class_balanced``: the nearest nested
    table that declared any)."""
    path = f"data.{split}"
    if facts.get(path):
        return path, facts[path]
    nested = sorted((p for p in facts if p.startswith(path + ".")), key=len)
    return (nested[0], facts[nested[0]]) if nested else (path, {})


def _check_classes(cfg, raw, facts: dict[str, dict], splits: tuple[str, ...], warnings: list[str]) -> None:
    num = cfg.model.get("num_classes") if isinstance(cfg.model, dict) else None
    if not isinstance(num, int) or isinstance(num, bool):
        return
    fewer: dict[tuple[str, ...], list[str]] = {}  # the data's class names -> the splits with them
    for split in splits:
        names = _dataset_facts(facts, split)[1].get("class_names")
        if names is None:
            continue
        names = tuple(map(str, names))
        if num < len(names):
            raise RunFileError(
                f"model.num_classes = {num} but data.{split} has {len(names)} classes ({_listed(names)}): "
                f"labels {num}..{len(names) - 1} cannot be predicted and would fail in training. "
                f"Set model.num_classes = {len(names)}, or select {num} classes with the dataset's "
                f"'classes' list.",
                file=raw.file_of("model.num_classes"),
                key="model.num_classes",
            )
        if num > len(names):
            fewer.setdefault(names, []).append(f"data.{split}")
    for names, where in fewer.items():
        warnings.append(
            f"model.num_classes = {num} but {' and '.join(where)} {'has' if len(where) == 1 else 'have'} "
            f"{len(names)} classes ({_listed(names)}): the model learns {num - len(names)} class(es) that "
            f"never occur, and its predictions of them are left out of evaluation. Set "
            f"model.num_classes = {len(names)} unless you mean it."
        )


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")


def _check_masks(cfg, raw, facts: dict[str, dict], splits: tuple[str, ...]) -> None:
    if not facts.get("model", {}).get("needs_masks"):
        return
    if "train" not in splits:
        return
    path, found = _dataset_facts(facts, "train")
    if found.get("masks", True):
        return
    key = found.get("masks_key")
    how = (
        f"set {path}.{key} = true" if key
        else "use a dataset that loads instance masks (e.g. type = \"coco\" with with_masks = true)"
    )
    raise RunFileError(
        f"detector '{cfg.model['type']}' trains on instance masks, but {path} loads none: {how} "
        f"(or use a box-only detector such as faster_rcnn).",
        file=raw.file_of(path),
        key=f"{path}.{key}" if key else path,
    )
