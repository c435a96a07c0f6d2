from __future__ import annotations

from importlib import metadata

import pytest

pytest.importorskip("gridkv_metrics")

from gridkv.plugins import ENTRY_POINT_GROUP, Plugins


def test_entry_point_is_declared_in_the_gridkv_plugins_group() -> None:
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    assert "metrics" in eps.names
    assert eps["metrics"].value == "gridkv_metrics"


def test_plugin_manager_loads_the_plugin_under_its_name() -> None:
    plugins = Plugins()
    assert "metrics" in plugins.plugin_names()


def test_plugin_can_be_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDKV_DISABLE_PLUGINS", "metrics")
    assert "metrics" not in Plugins().plugin_names()
