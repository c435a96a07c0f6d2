from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import gridkv
import pytest
from gridkv import hookimpl
from gridkv.errors import BackendNotInstalled, ConfigError
from gridkv.options import Options
from gridkv.plugins import Plugins
from gridkv.storage import MemoryStorage
from gridkv.transport import MemoryNetwork, MemoryTransport


def test_builtin_backends_register_through_the_hooks(plugins: Plugins) -> None:
    assert "memory" in plugins.transports()
    assert "memory" in plugins.storage_backends()
    assert "none" in plugins.authenticators()
    assert "gridkv.builtin" in plugins.plugin_names()


def test_missing_transport_names_the_distribution_to_install(plugins: Plugins) -> None:
    with pytest.raises(
        BackendNotInstalled,
        match=r"transport 'quic' is not installed: pip install gridkv-transport-quic",
    ):
        plugins.transport("quic")


def test_asking_for_a_missing_backend_fails_at_construction(plugins: Plugins) -> None:
    with pytest.raises(BackendNotInstalled, match="gridkv-transport-carrier-pigeon"):
        gridkv.AsyncGridKV(network={"type": "carrier-pigeon"}, plugins=plugins)
    with pytest.raises(BackendNotInstalled, match="gridkv-storage-rocks"):
        gridkv.AsyncGridKV(storage={"backend": "rocks"}, plugins=plugins)


def test_a_misspelt_hook_is_rejected(plugins: Plugins) -> None:
    class Typo:
        @hookimpl
        def gridkv_register_transport(self, register: Callable[..., None]) -> None:
            raise AssertionError("never called")

    with pytest.raises(ConfigError, match="gridkv_register_transport"):
        plugins.register(Typo(), name="typo")


def test_inline_plugin_registers_a_storage_backend_and_unregisters(plugins: Plugins) -> None:
    made: list[Options] = []

    class Plugin:
        @hookimpl
        def gridkv_register_storage(self, register: Callable[[str, Any], None]) -> None:
            def factory(options: Options, *, clock: Callable[[], float]) -> MemoryStorage:
                made.append(options)
                return MemoryStorage(options.partition_count, clock=clock)

            register("counting", factory)

    plugins.register(Plugin(), name="counting-plugin")
    kv = gridkv.AsyncGridKV(storage={"backend": "counting"}, plugins=plugins)
    assert kv.stats().storage.backend == "memory"
    assert len(made) == 1
    plugins.unregister("counting-plugin")
    assert "counting" not in plugins.storage_backends()


def test_two_plugins_registering_one_name_is_an_error(plugins: Plugins) -> None:
    class Dup:
        @hookimpl
        def gridkv_register_transports(self, register: Callable[[str, Any], None]) -> None:
            register("memory", lambda options: None)

    plugins.register(Dup(), name="dup")
    with pytest.raises(ConfigError, match="two plugins register the name 'memory'"):
        plugins.transports()


def test_disabled_plugins_are_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDKV_DISABLE_PLUGINS", "gridkv.builtin")
    blocked = Plugins(load_entry_points=False)
    with pytest.raises(BackendNotInstalled, match="GRIDKV_DISABLE_PLUGINS"):
        blocked.transport("memory")


async def test_lifecycle_hooks_see_the_node_start_and_stop(plugins: Plugins) -> None:
    events: list[tuple[str, str]] = []

    class Watcher:
        @hookimpl
        def gridkv_node_started(self, node: Any) -> None:
            events.append(("started", node.node_id))

        @hookimpl
        def gridkv_node_stopping(self, node: Any) -> None:
            events.append(("stopping", node.node_id))

    plugins.register(Watcher(), name="watcher")
    transport = MemoryTransport("w:1", MemoryNetwork())
    async with gridkv.AsyncGridKV(local_node_id="w", transport=transport, plugins=plugins):
        assert events == [("started", "w")]
    assert events == [("started", "w"), ("stopping", "w")]
    await asyncio.sleep(0)
