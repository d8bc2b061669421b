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
            where.append(f"key '{shorten(key)}'")
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


# Longest text of a user's value that a message echoes: a 10 MB string in a
# run file must not become a 10 MB error message.
SHORTEN_LIMIT = 120


def shorten(text: object, limit: int = SHORTEN_LIMIT) -> str:
    """``str(text)`` for a message: cut to about ``limit`` characters, saying
    how long the whole is (``'aaaa…' (10485760 characters)``). The one place
    that decides how much of a user's value an error message echoes."""
    text = str(text)
    if len(text) <= limit:
        return text
    keep = max(limit - 20, 8)
    return f"{text[:keep]}… ({len(text)} characters)"


class ImageInputError(DetcoreError):
    """An image given to :meth:`detcore.Detector.predict` that is not one
    (wrong type, shape or value range)."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return `` (did you mean 'x'?)`` for the closest choice, or ``""``."""
    word = str(word)
    if len(word) > 4 * SHORTEN_LIMIT:
        return ""  # difflib is quadratic; nothing that long is a typo of a name
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{shorten(close[0])}'?)" if close else ""
