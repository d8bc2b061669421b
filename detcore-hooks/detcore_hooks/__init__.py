"""detcore-hooks: optional runner hooks for detcore.

A run file switches a hook on with a ``[[hooks]]`` table::

    [[hooks]]
    type = "ema"
    momentum = 0.0002

The entry point (``detcore_hooks.plugin``) is light: each hook's module, and
torch with it, is imported only when a run builds that hook.
"""

from __future__ import annotations

__version__ = "0.1.0"
