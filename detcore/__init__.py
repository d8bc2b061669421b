"""detcore: object-detection training with a thin, pluggable core.

Importing this package is cheap: it pulls in pluggy and nothing heavy. torch,
torchvision and every plugin are imported only when a command needs them.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookspec = pluggy.HookspecMarker("detcore")
hookimpl = pluggy.HookimplMarker("detcore")

# Names below are light (no torch) and re-exported lazily so that
# ``import detcore`` stays as small as pluggy itself.
_LAZY = {
    "Sub": "detcore.catalog",
    "Spec": "detcore.catalog",
    "check_with": "detcore.catalog",
    "Command": "detcore.catalog",
    "RunFileError": "detcore.errors",
    "DetcoreError": "detcore.errors",
    "ConfigCheckError": "detcore.errors",
}

__all__ = ["__version__", "hookimpl", "hookspec", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'detcore' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
