"""Errors that reach the user as one paragraph and an exit status, never a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DetcoreError(Exception):
    """An error the CLI prints as a message (no traceback) before exiting with ``exit_code``."""

    exit_code = 1


class RunFileError(DetcoreError):
    """A run file (or ``--set`` override) that cannot be used as written.

    ``file`` is where the offending value came from, ``key`` its dotted path
    (``model.backbone.depth``). Exit status 2, like a usage error.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.problem = message
        where = []
        if file:
            where.append(str(file))
        if key:
            where.append(f"key '{key}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigCheckError(ValueError):
    """Raised by a component's check function (see ``detcore.check_with``).

    ``key`` is relative to the component's table (``"depth"`` or
    ``"neck.in_channels"``); the loader prefixes the table's own path.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class UsageError(DetcoreError):
    """A command-line option with a value out of range: exit status 2, like
    argparse's own usage errors."""

    exit_code = 2


class PluginError(DetcoreError):
    """A plugin that cannot be loaded, or two plugins that clash."""

    exit_code = 2


class CheckpointError(DetcoreError):
    """A checkpoint file that cannot be read or does not fit the model."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
