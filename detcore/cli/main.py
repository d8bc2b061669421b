"""``detcore`` entry point: loads plugins, builds the parser, runs a command.

User errors (:class:`detcore.errors.DetcoreError`) are printed as one paragraph
without a traceback; run-file errors exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import detcore
from detcore.errors import DetcoreError


def preparse_plugin_args(argv: Sequence[str]) -> list[str]:
    """``-p`` values anywhere on the command line (needed before the parser
    exists, since plugins add subcommands)."""
    out = []
    it = iter(range(len(argv)))
    for i in it:
        a = argv[i]
        if a == "--":
            break
        if a in ("-p", "--plugin") and i + 1 < len(argv):
            out.append(argv[i + 1])
            next(it, None)
        elif a.startswith("-p") and len(a) > 2 and not a.startswith("--"):
            out.append(a[2:])
        elif a.startswith("--plugin="):
            out.append(a.split("=", 1)[1])
    return out


def wants_plugin_check(argv: Sequence[str]) -> bool:
    """Whether the command line is ``detcore [-p X ...] plugins ... --check``."""
    words = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in ("-p", "--plugin"):
            skip = True
        elif not a.startswith("-"):
            words.append(a)
    return bool(words) and words[0] == "plugins" and "--check" in argv


def plugin_option_parser() -> argparse.ArgumentParser:
    """Options every subcommand accepts."""
    common = argparse.ArgumentParser(add_help=False)
    add_plugin_option(common)
    return common


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        "--plugin",
        dest="plugin_args_cli",
        action="append",
        default=[],
        metavar="NAME",
        help="load plugin module NAME for this run, or block a plugin with no:NAME (repeatable)",
    )


def build_parser(catalog) -> argparse.ArgumentParser:
    common = plugin_option_parser()
    parser = argparse.ArgumentParser(
        prog="detcore",
        description="Object-detection training with a thin core; plugins provide the rest.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"detcore {detcore.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for comp in sorted(catalog, key=lambda c: c.name):
        if comp.kind != "command":
            continue
        cmd = comp.factory
        p = sub.add_parser(comp.name, help=cmd.help, description=cmd.help, parents=[common])
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from detcore.catalog import Catalog
        from detcore.plugins import get_plugin_manager

        plugin_args = preparse_plugin_args(argv)
        # ``detcore plugins --check`` reports every broken plugin instead of
        # stopping at the first, so it loads them leniently.
        pm = get_plugin_manager(plugin_args, strict=not wants_plugin_check(argv))
        catalog = Catalog.from_plugin_manager(pm)
        parser = build_parser(catalog)
        args = parser.parse_args(argv)
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return 0
        args.plugin_args = plugin_args
        args.argv = argv  # the exact command line, e.g. for a "resume with" hint
        args.pm = pm
        args.catalog = catalog
        return int(args._run(args) or 0)
    except DetcoreError as exc:
        print(f"detcore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("detcore: interrupted", file=sys.stderr)
        return 130
