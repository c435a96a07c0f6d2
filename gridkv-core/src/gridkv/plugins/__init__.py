"""The plugins layer: hooks, the typed facade over them, and GridKV's own registrations.

GridKV's own backends register through the same hooks as any plugin.
"""

from __future__ import annotations

from gridkv.plugins.hookspecs import PROJECT_NAME, hookimpl, hookspec
from gridkv.plugins.manager import (
    BUILTIN_NAME,
    DISABLE_ENV,
    ENTRY_POINT_GROUP,
    Plugins,
    distribution_for,
    get_plugins,
)

__all__ = [
    "PROJECT_NAME",
    "hookspec",
    "hookimpl",
    "ENTRY_POINT_GROUP",
    "DISABLE_ENV",
    "BUILTIN_NAME",
    "Plugins",
    "get_plugins",
    "distribution_for",
]
