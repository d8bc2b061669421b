"""Run files: loading (``extends``, ``--set``), the top-level schema and validation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs

from detcore.catalog import Catalog, collecting_declarations
from detcore.errors import PluginError, RunFileError
from detcore.runfile.crosscheck import crosscheck
from detcore.runfile.loader import RawRunFile, load_raw
from detcore.runfile.schema import RunConfig
from detcore.runfile.validate import check_components, resolved_dict, structure

__all__ = ["Run", "RunConfig", "RawRunFile", "load_run", "load_raw", "resolved_dict"]


@attrs.frozen
class Run:
    """A validated run file with the plugin manager and catalog it was checked
    against: everything a command needs to build and train."""

    raw: RawRunFile
    cfg: RunConfig
    pm: object
    catalog: Catalog
    #: What the checks between tables found probably unintended but
    #: workable (one paragraph each): printed by ``config check``, logged by ``train``.
    warnings: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return self.raw.path

    @property
    def work_dir(self) -> Path:
        return Path(self.cfg.work_dir) if self.cfg.work_dir else Path("work_dirs") / self.raw.path.stem


def load_run(
    path: str | Path,
    overrides: Sequence[str] = (),
    plugin_args: Sequence[str] = (),
    *,
    pm=None,
    data_splits: Sequence[str] = ("train", "val", "test"),
    text: str | None = None,
) -> Run:
    """Read, merge, override and validate a run file.

    ``plugin_args`` are ``-p`` values (``MODULE`` or ``no:NAME``). With ``pm``
    given (tests, :mod:`detcore.testing`), that plugin manager is used as is,
    plus the run file's ``plugins`` list. Only the dataset tables of
    ``data_splits`` are checked (their checks read annotation files).
    With ``text``, that TOML is the run file and ``path`` only names it (a
    checkpoint's saved run file).
    """
    from detcore.plugins import get_plugin_manager

    raw = load_raw(path, overrides, text=text)
    modules = raw.data.get("plugins", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise RunFileError(
            "'plugins' must be an array of module names, e.g. plugins = [\"my_plugin\"]",
            file=raw.file_of("plugins"),
            key="plugins",
        )
    if pm is None:
        pm = get_plugin_manager(plugin_args)
    for i, module in enumerate(modules):
        # Looked for next to the file that names it (a base run file may
        # live elsewhere; a --set value counts as the run file's own).
        origin = Path(raw.file_of(f"plugins[{i}]"))
        folder = origin.parent if origin.is_file() else raw.path.parent
        try:
            pm.load_runfile_module(module, folder.resolve())
        except PluginError as exc:
            raise RunFileError(str(exc), file=str(origin if origin.is_file() else raw.path), key=f"plugins[{i}]") from None
    if modules:
        pm.check_hooks()
    catalog = Catalog.from_plugin_manager(pm)
    cfg = structure(RunConfig, raw.data, raw)
    with collecting_declarations() as declared:
        check_components(cfg, raw, catalog, tuple(data_splits))
    warnings = crosscheck(cfg, raw, catalog, declared, tuple(data_splits))
    return Run(raw=raw, cfg=cfg, pm=pm, catalog=catalog, warnings=tuple(warnings))
