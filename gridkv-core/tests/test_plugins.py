from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import gridkv
import pytest
from gridkv import hookimpl
from gridkv.base.errors import BackendNotInstalled, ConfigError
from gridkv.base.options import Options
from gridkv.plugins import Plugins
from gridkv.storage import MemoryStorage
from gridkv.transport import MemoryNetwork, MemoryTransport


def test_builtin_backends_register_through_the_hooks(plugins: Plugins) -> None:
    # Built-ins only (the fixture loads no entry point): exactly what gridkv.builtin registers.
    assert list(plugins.transports()) == ["memory"]
    assert list(plugins.storage_backends()) == ["memory"]
    assert list(plugins.authenticators()) == ["ed25519", "none"]
    assert plugins.plugin_names() == ["gridkv.builtin"]


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


# -- lifecycle hooks that raise -------------------------------------------------------------


class _Recorder:
    """Records every lifecycle call it gets."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    @hookimpl
    def gridkv_node_started(self, node: Any) -> None:
        self.events.append(("started", node.node_id))

    @hookimpl
    def gridkv_node_stopping(self, node: Any) -> None:
        self.events.append(("stopping", node.node_id))

    @hookimpl
    def gridkv_member_changed(self, node: Any, member: Any, old: str | None, new: str) -> None:
        self.events.append(("member", node.node_id, member.node_id, new))


class _Raising:
    """Raises from every lifecycle hook."""

    @hookimpl
    def gridkv_node_started(self, node: Any) -> None:
        raise RuntimeError("started hook broke")

    @hookimpl
    def gridkv_node_stopping(self, node: Any) -> None:
        raise RuntimeError("stopping hook broke")

    @hookimpl
    def gridkv_member_changed(self, node: Any, member: Any, old: str | None, new: str) -> None:
        raise RuntimeError("member hook broke")


async def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("raising_first", [True, False], ids=["raising-first", "raising-last"])
async def test_lifecycle_hooks_that_raise_are_logged_and_break_nothing(
    plugins: Plugins, caplog: pytest.LogCaptureFixture, raising_first: bool
) -> None:
    recorder = _Recorder()
    pair = [(_Raising(), "raising"), (recorder, "recorder")]
    for plugin, name in pair if raising_first else reversed(pair):
        plugins.register(plugin, name=name)
    net = MemoryNetwork()
    seed = gridkv.AsyncGridKV(
        local_node_id="a",
        disable_auth=True,
        transport=MemoryTransport("a:1", net, timeout=0.2),
        plugins=plugins,
    )
    joiner = gridkv.AsyncGridKV(
        local_node_id="b",
        disable_auth=True,
        seed_addrs=["a:1"],
        transport=MemoryTransport("b:1", net, timeout=0.2),
        plugins=Plugins(load_entry_points=False),
    )
    async with seed:
        assert ("started", "a") in recorder.events
        async with joiner:
            await joiner.wait_ready(timeout=5)
            await _wait_until(lambda: ("member", "a", "b", "alive") in recorder.events)
            await seed.set("k", b"v")
            assert await seed.get("k") == b"v"
        await _wait_until(lambda: ("member", "a", "b", "left") in recorder.events)
    assert recorder.events[-1] == ("stopping", "a")  # and the close went through

    failures = [r for r in caplog.records if r.name == "gridkv" and r.exc_info is not None]
    hooks = {r.getMessage().split(" raised in ")[1].split(";")[0] for r in failures}
    assert hooks == {"gridkv_node_started", "gridkv_node_stopping", "gridkv_member_changed"}
    assert all("plugin 'raising' raised in" in r.getMessage() for r in failures)
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in failures)


def test_a_lifecycle_hook_that_raises_is_logged_once_per_call(
    plugins: Plugins, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = _Recorder()
    plugins.register(_Raising(), name="raising")
    plugins.register(recorder, name="recorder")
    node = type("FakeNode", (), {"node_id": "n"})()
    plugins.node_started(node)
    assert recorder.events == [("started", "n")]
    records = [r for r in caplog.records if r.name == "gridkv"]
    assert len(records) == 1
    assert records[0].levelname == "ERROR"
    assert "plugin 'raising' raised in gridkv_node_started" in records[0].getMessage()
    assert "started hook broke" in caplog.text  # the traceback


def test_a_wrapper_of_a_lifecycle_hook_is_refused_and_not_kept(plugins: Plugins) -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def gridkv_node_started(self, node: Any) -> Any:
            return (yield)

    with pytest.raises(ConfigError, match="gridkv_node_started cannot be a wrapper"):
        plugins.register(Wrapper(), name="wrapper")
    assert "wrapper" not in plugins.plugin_names()
