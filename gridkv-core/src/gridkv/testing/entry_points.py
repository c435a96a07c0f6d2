"""Checks that a plugin distribution's entry point is declared and loads (for its own tests)."""

from __future__ import annotations

import os
from importlib import metadata

from gridkv.plugins import DISABLE_ENV, ENTRY_POINT_GROUP, Plugins

__all__ = ["check_entry_point"]


def check_entry_point(name: str, module: str) -> None:
    """Assert that plugin ``name`` is declared for ``module``, loads, and can be disabled.

    :raises AssertionError: naming what is wrong.
    """
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    assert name in eps.names, f"no entry point {name!r} in group {ENTRY_POINT_GROUP!r}"
    assert eps[name].value == module, f"entry point {name!r} points at {eps[name].value!r}"
    assert name in Plugins().plugin_names(), f"plugin {name!r} did not load"
    saved = os.environ.get(DISABLE_ENV)
    os.environ[DISABLE_ENV] = name
    try:
        assert name not in Plugins().plugin_names(), f"{DISABLE_ENV} did not block {name!r}"
    finally:
        if saved is None:
            del os.environ[DISABLE_ENV]
        else:
            os.environ[DISABLE_ENV] = saved
