"""The work dir's checkpoint files: atomic writes, the ``latest`` pointer,
keep-last-N and best-by-metric, resume candidates, and the class names a
checkpoint carries.

What a run puts into a checkpoint and how it resumes is
:mod:`detcore.engine.checkpointer`; reading files and loading weights
(``load_from``) is :mod:`detcore.weights`; RNG states are
:mod:`detcore.engine.rng`. Their names stay importable from here.

A detcore checkpoint is a dict of tensors, numbers, strings, lists, tuples
and dicts only (nothing pickled by class), so it loads with
``torch.load(weights_only=True)`` in any later torch:

``detcore``       ``{"format": 1, "version": "0.1.0"}``
``meta``          epoch, iter, time, class_names, cat_ids, palette,
                  model type, the resolved run file (TOML text), best metric
``model``         the model's state dict (unwrapped from DDP)
``optimizer``, ``lr_scheduler``, ``scaler`` (or ``None``)
``rng``           python, numpy, torch and CUDA generator states
``sampler``       epoch and the next batch of the epoch (resume by index)
``hooks``         runner hooks' own state (``detcore_save_checkpoint``)
``integrity``     SHA-256 of all the above (:mod:`detcore.integrity`)
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import detcore
from detcore.engine.disk import nbytes, writing
from detcore.engine.rng import get_rng_state, set_rng_state
from detcore.errors import CheckpointError
from detcore.integrity import seal
from detcore.weights import load_weights, read_checkpoint, weights_of

__all__ = [
    "FORMAT",
    "CheckpointFiles",
    "atomic_save",
    "check_checkpoint_classes",
    "check_checkpoint_model",
    "class_meta",
    "find_resume",
    "get_rng_state",
    "is_detcore_checkpoint",
    "load_weights",
    "read_checkpoint",
    "set_rng_state",
    "weights_of",
]

FORMAT = 1
LATEST = "latest.json"


# ----------------------------------------------------------------------
# files
# ----------------------------------------------------------------------


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same directory, flushed to
    disk, then renamed over ``path``: the final name never holds a partial
    file, even if the process dies mid-write."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # A full disk is a DiskFullError naming the file, raised once the
    # partial temporary file is gone (so the free space it reports is real).
    with writing(path, "checkpoint", nbytes(obj)):
        try:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with writing(path, "file", len(text.encode())):
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def is_detcore_checkpoint(ckpt: dict) -> bool:
    return isinstance(ckpt.get("detcore"), dict) and "model" in ckpt and isinstance(ckpt.get("meta"), dict)


# ----------------------------------------------------------------------
# class names travel with the model
# ----------------------------------------------------------------------


def class_meta(dataset) -> dict:
    """``class_names``, ``cat_ids`` (label -> original category id) and
    ``palette`` of ``dataset``, as saved in every checkpoint's ``meta``."""
    from detcore.data.wrappers import class_mapping

    out = class_mapping(dataset)
    palette = getattr(dataset, "palette", None)
    if palette is not None:
        out["palette"] = [[int(c) for c in color] for color in palette]
    return out


def check_checkpoint_classes(checkpoint: dict | str | Path, dataset, *, split: str = "test", name: str | None = None) -> None:
    """Raise :class:`CheckpointError` when the class names or category-id
    mapping saved in ``checkpoint`` (a dict or a file) differ from
    ``dataset``'s; the message names both lists. Checkpoints without class
    information (plain state dicts) pass."""
    from detcore.data.wrappers import check_class_mapping

    if not isinstance(checkpoint, dict):
        name = name or str(checkpoint)
        checkpoint = read_checkpoint(checkpoint)
    meta = checkpoint.get("meta") or {}
    check_class_mapping(meta, dataset, checkpoint=name or "(checkpoint)", split=split)


def check_checkpoint_model(ckpt: dict, run, name: str) -> None:
    """Raise :class:`CheckpointError` when detcore checkpoint ``ckpt`` was
    trained with another detector type than ``run``'s ``[model]``, naming the
    checkpoint's own detector, classes and run file (the work dir's
    ``resolved.toml`` beside it, when it is that run's). Other files pass:
    their weights are checked key by key when loaded."""
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    theirs, ours = meta.get("model_type"), run.cfg.model.get("type")
    if not theirs or theirs == ours:
        return
    classes = list(meta.get("class_names") or [])
    shown = f"{len(classes)} classes: {', '.join(map(str, classes[:5]))}{', ...' if len(classes) > 5 else ''}"
    resolved = Path(name).parent / "resolved.toml"
    try:
        own = resolved if resolved.read_text() == meta.get("run_file") else None
    except OSError:
        own = None
    run_file = (
        f"its run file is '{own}'" if own else "the run file it was trained with is saved in it (meta['run_file'])"
    )
    raise CheckpointError(
        f"checkpoint '{name}' is a '{theirs}' detector ({shown}) and {run_file}, but {run.path} builds a "
        f"'{ours}'. Use the checkpoint's own run file"
        + (f" (e.g. --checkpoint {name} with {own})" if own else "")
        + ", or a checkpoint trained with this run file."
    )


# ----------------------------------------------------------------------
# the work dir's checkpoints
# ----------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def best_name(metric: str, tag: str) -> str:
    """File name of the best checkpoint for ``metric`` (any characters) at
    ``tag`` (``epoch_3``, ``iter_400``)."""
    return f"best_{_safe(metric)}_{tag}.pth"


class CheckpointFiles:
    """The checkpoints a run writes in its work dir.

    Interval checkpoints are ``epoch_N.pth`` / ``iter_N.pth``; only the
    newest ``keep`` stay (``-1``: all). The best one by a metric is
    ``best_<metric>_<tag>.pth`` (one file, replaced when beaten).
    ``latest.json`` names the newest checkpoint and the interval history,
    updated after each file is complete. Only rank 0 calls these."""

    def __init__(self, work_dir: str | Path, keep: int = -1):
        self.work_dir = Path(work_dir)
        self.keep = keep

    def pointer(self) -> dict:
        p = self.work_dir / LATEST
        try:
            data = json.loads(p.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save(self, ckpt: dict, name: str) -> Path:
        path = atomic_save(seal(ckpt), self.work_dir / name)
        pointer = self.pointer()
        history = [h for h in pointer.get("history", []) if h != name and (self.work_dir / h).exists()]
        history.append(name)
        if self.keep > 0:
            while len(history) > self.keep:
                old = history.pop(0)
                (self.work_dir / old).unlink(missing_ok=True)
        meta = ckpt.get("meta", {})
        pointer = {
            "checkpoint": name,
            "epoch": meta.get("epoch"),
            "iter": meta.get("iter"),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "history": history,
            "best": pointer.get("best"),
        }
        _write_text_atomic(self.work_dir / LATEST, json.dumps(pointer, indent=1))
        return path

    def save_best(self, ckpt: dict, metric: str, tag: str, previous: str | None) -> str:
        name = best_name(metric, tag)
        atomic_save(seal(ckpt), self.work_dir / name)
        if previous and previous != name:
            (self.work_dir / previous).unlink(missing_ok=True)
        pointer = self.pointer()
        pointer["best"] = name
        _write_text_atomic(self.work_dir / LATEST, json.dumps(pointer, indent=1))
        return name

    def candidates(self) -> list[Path]:
        """Resume candidates, newest first: the interval checkpoints named in
        ``latest.json`` and any other ``epoch_*.pth`` / ``iter_*.pth`` (a run
        killed between writing a file and updating the pointer), by
        modification time; the pointer's order breaks ties."""
        pointer = self.pointer()
        names: list[str] = []
        if pointer.get("checkpoint"):
            names.append(pointer["checkpoint"])
        names += list(reversed(pointer.get("history", [])))
        paths: list[Path] = []
        for p in [self.work_dir / n for n in names] + sorted(self.work_dir.glob("*.pth")):
            if p.exists() and p not in paths and (p.name in names or re.fullmatch(r"(epoch|iter)_\d+\.pth", p.name)):
                paths.append(p)
        rank = {p: i for i, p in enumerate(paths)}
        return sorted(paths, key=lambda p: (-p.stat().st_mtime_ns, rank[p]))


def find_resume(work_dir: str | Path, log=print) -> tuple[Path, dict] | None:
    """The newest checkpoint in ``work_dir`` that loads and is a detcore
    checkpoint, with its contents; a truncated or foreign newer file is
    reported through ``log`` and skipped. ``None`` when there is none."""
    files = CheckpointFiles(work_dir)
    for path in files.candidates():
        try:
            ckpt = read_checkpoint(path)
        except CheckpointError as exc:
            log(f"auto-resume: skipping {path}: {exc}; trying the previous checkpoint")
            continue
        if not is_detcore_checkpoint(ckpt):
            log(f"auto-resume: skipping {path}: not a detcore training checkpoint (no 'detcore'/'meta' "
                f"entries); trying the previous checkpoint")
            continue
        return path, ckpt
    return None


def new_checkpoint(meta: dict) -> dict:
    return {"detcore": {"format": FORMAT, "version": detcore.__version__}, "meta": meta, "hooks": {}}
