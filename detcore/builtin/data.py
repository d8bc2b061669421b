"""Built-in data components: transforms and dataset wrappers."""

from __future__ import annotations

from detcore import hookimpl


@hookimpl
def detcore_transforms():
    return {}
