"""``detcore config show|check``."""

from __future__ import annotations

import argparse

from detcore.errors import DetcoreError


def add_runfile_args(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    """The run file and ``--set``; ``optional`` leaves checking that the run
    file was given to the command (``train --resume RUN.toml``)."""
    parser.add_argument("runfile", metavar="RUN.toml", nargs="?" if optional else None, help="run file")
    if "-p" not in parser._option_string_actions:
        from detcore.cli.main import add_plugin_option

        add_plugin_option(parser)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run-file key; VALUE is TOML (--set optimizer.lr=0.02)",
    )


def load_from_args(args, data_splits=("train", "val", "test")):
    """The validated :class:`detcore.runfile.Run` for a command's arguments;
    only the dataset tables of ``data_splits`` are checked (``predict`` and
    ``export`` need no dataset files on the machine)."""
    from detcore.runfile import load_run

    return load_run(
        args.runfile, args.overrides, args.plugin_args, pm=args.pm, data_splits=data_splits
    )


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the fully resolved run file as TOML")
    add_runfile_args(show)
    check = sub.add_parser("check", help="validate a run file (exit 0 if valid, 2 if not)")
    add_runfile_args(check)


def run(args) -> int:
    from detcore.runfile import resolved_dict
    from detcore.runfile.toml_writer import dumps

    loaded = load_from_args(args)
    if args.config_command == "show":
        print(dumps(resolved_dict(loaded.cfg, loaded.catalog)), end="")
        return 0
    if args.config_command == "check":
        import sys

        for warning in loaded.warnings:
            print(f"detcore config check: warning: {warning}", file=sys.stderr)
        cfg = loaded.cfg
        splits = [s for s in ("train", "val", "test") if getattr(cfg.data, s) is not None]
        print(
            f"{loaded.path}: OK (detector '{cfg.model['type']}', data: {', '.join(splits) or 'none'}, "
            f"{len(cfg.metrics)} metric(s), {len(cfg.hooks)} hook(s)"
            + (f", {len(loaded.warnings)} warning(s))" if loaded.warnings else ")")
        )
        return 0
    raise DetcoreError(f"unknown config action {args.config_command!r}")  # pragma: no cover
