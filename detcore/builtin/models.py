"""Built-in model components: backbones, necks, heads and detectors."""

from __future__ import annotations

from detcore import hookimpl


@hookimpl
def detcore_backbones():
    return {}
