from __future__ import annotations

from importlib import metadata

import pytest

pytest.importorskip("gridkv_transport_quic")

from gridkv.plugins import ENTRY_POINT_GROUP, Plugins


def test_entry_point_is_declared_in_the_gridkv_plugins_group() -> None:
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    assert "quic" in eps.names
    assert eps["quic"].value == "gridkv_transport_quic"


def test_plugin_manager_loads_the_plugin_under_its_name() -> None:
    plugins = Plugins()
    assert "quic" in plugins.plugin_names()


def test_plugin_can_be_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDKV_DISABLE_PLUGINS", "quic")
    assert "quic" not in Plugins().plugin_names()
