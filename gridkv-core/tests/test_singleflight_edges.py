"""Singleflight and the near cache at their edges, from a hostile review: waiters on the
holder's own node, stale fills, cancelled askers, forged releases, hostile watches, long
keys, and what a disabled watch table means for the askers."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from gridkv import AsyncGridKV, GridKV, GridKVError, LoaderFailed, PeerTimeout
from gridkv.cluster.replication.leases import FAILED, RETRY
from gridkv.testing.memory_cluster import start_memory_cluster
from gridkv.testing.waiting import wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport
from gridkv.wire.messages import WatchedGetRequest


def _owned_by(owner: AsyncGridKV, prefix: str = "k") -> tuple[str, int]:
    table = owner.node.table
    for i in range(10_000):
        key = f"{prefix}{i}"
        partition = table.partition_of(key)
        if table.owners(partition)[0] == owner.node_id:
            return key, partition
    raise AssertionError("no key found")


def _loader(calls: list[str], name: str, gate: asyncio.Event) -> Callable[[], Awaitable[bytes]]:
    async def load() -> bytes:
        calls.append(name)
        await gate.wait()
        return name.encode()

    return load


async def _close(nodes: list[AsyncGridKV]) -> None:
    for kv in nodes:
        await kv.close()


async def test_a_caller_on_the_hung_holders_own_node_takes_the_lease_over() -> None:
    nodes = await start_memory_cluster("edge-local", 3, replica_count=2)
    try:
        hang = asyncio.Event()
        holder = asyncio.ensure_future(
            nodes[0].get_or_set("k", _loader([], "late", hang), lease_timeout=0.2)
        )
        await wait_until(lambda: "k" in nodes[0].node.mutator.singleflight.flights, 5)
        taken = await asyncio.wait_for(
            nodes[0].get_or_set("k", lambda: b"taken over", lease_timeout=0.2), 5
        )
        assert taken == b"taken over"
        hang.set()
        assert await holder == b"late"
        assert await nodes[0].get("k") == b"taken over"  # the late fill did not overwrite it
    finally:
        await _close(nodes)


def test_a_thread_on_the_hung_holders_own_node_takes_the_lease_over() -> None:
    net = MemoryNetwork()
    with GridKV(
        local_node_id="edge-b",
        local_address="edge-b:1",
        transport=MemoryTransport("edge-b:1", net),
        disable_auth=True,
        read_timeout=0.2,
    ) as kv:
        release = threading.Event()
        started = threading.Event()

        def hung() -> bytes:
            started.set()
            release.wait(30)
            return b"late"

        first = threading.Thread(target=lambda: kv.get_or_set("k", hung, lease_timeout=0.2))
        first.start()
        assert started.wait(5)
        try:
            assert kv.get_or_set("k", lambda: b"taken over", lease_timeout=0.2) == b"taken over"
        finally:
            release.set()
            first.join(10)


@pytest.mark.parametrize("change", ["set", "delete"])
async def test_a_write_or_delete_during_the_load_is_not_undone_by_it(change: str) -> None:
    nodes = await start_memory_cluster(f"edge-fill-{change}", 3, replica_count=2)
    try:
        gate = asyncio.Event()
        call = asyncio.ensure_future(
            nodes[1].get_or_set("user:1", _loader([], "stale", gate), ttl=3600)
        )
        await wait_until(lambda: "user:1" in nodes[1].node.mutator.singleflight.flights, 5)
        if change == "set":  # the database changed: the application writes the new value
            await nodes[2].set("user:1", b"new", consistency="all")
        else:  # ... or drops the cached one
            await nodes[2].delete("user:1", consistency="all")
        gate.set()
        # The caller gets the newer value after a write, what it loaded after a delete.
        assert await call == (b"new" if change == "set" else b"stale")
        expected = b"new" if change == "set" else None
        assert await nodes[0].get("user:1", consistency="all") == expected
    finally:
        await _close(nodes)


async def test_a_cancelled_askers_request_does_not_swallow_the_lease_passed_on() -> None:
    nodes = await start_memory_cluster("edge-orphan", 3, replica_count=2)
    owner, holding, asking = nodes
    try:
        key, _ = _owned_by(owner)
        leases = owner.node.mutator.leases
        holder = asyncio.ensure_future(
            holding.get_or_set(key, _loader([], "h", asyncio.Event()), lease_timeout=30)
        )
        await wait_until(lambda: key in leases.held, 5)
        gone = asyncio.ensure_future(asking.get_or_set(key, lambda: b"x", lease_timeout=30))
        await wait_until(lambda: len(leases.held[key].waiters) == 1, 5)
        gone.cancel()  # gives up while its request waits at the owner
        await asyncio.gather(gone, return_exceptions=True)
        live = asyncio.ensure_future(asking.get_or_set(key, lambda: b"y", lease_timeout=30))
        await wait_until(lambda: any(not w[0].done() for w in leases.held[key].waiters), 5)
        holder.cancel()  # passes the lease on at once, well before its 30 s
        await asyncio.gather(holder, return_exceptions=True)
        assert await asyncio.wait_for(live, 5) == b"y"
    finally:
        await _close(nodes)


async def test_a_loader_error_whose_text_is_not_utf8_reaches_everyone() -> None:
    nodes = await start_memory_cluster("edge-utf", 2, replica_count=2)
    try:
        gate = asyncio.Event()

        async def failing() -> bytes:
            await gate.wait()
            raise ValueError("no such file: " + b"caf\xe9".decode("utf-8", "surrogateescape"))

        holder = asyncio.ensure_future(nodes[0].get_or_set("k", failing))
        await wait_until(lambda: "k" in nodes[0].node.mutator.singleflight.flights, 5)
        waiter = asyncio.ensure_future(nodes[0].get_or_set("k", lambda: b"x"))
        await wait_until(lambda: nodes[0].node.mutator.singleflight.shared > 0, 5)
        gate.set()
        with pytest.raises(ValueError, match="no such file"):
            await holder
        with pytest.raises(LoaderFailed, match="no such file"):
            await asyncio.wait_for(waiter, 5)
    finally:
        await _close(nodes)


async def test_only_the_holder_may_release_and_bad_releases_are_refused() -> None:
    nodes = await start_memory_cluster("edge-forge", 3, replica_count=2)
    owner, holding, bystander = nodes
    try:
        key, partition = _owned_by(owner)
        calls: list[str] = []
        gate = asyncio.Event()
        holder = asyncio.ensure_future(
            holding.get_or_set(key, _loader(calls, "holder", gate), lease_timeout=30)
        )
        leases = owner.node.mutator.leases
        await wait_until(lambda: key in leases.held, 5)
        lease_id = leases.held[key].id
        send = bystander.node.mutator._send
        # Another node's release of the holder's lease is no release.
        assert not await send(
            owner.node_id, partition, key, "release", [lease_id, RETRY, b"", 0], "one", 2.0
        )
        # A release saying "granted", or a lease longer than a day, is malformed.
        for op, args in (
            ("release", [lease_id, 0, b"", 0]),
            ("lease", [86_400_001, 0]),
            ("lease", [1000, 60_001]),
        ):
            with pytest.raises(GridKVError, match="bad arguments"):
                await send(owner.node_id, partition, key, op, args, "one", 2.0)
        # The holder's own FAILED release with bytes that are not UTF-8 is read, not a crash.
        hsend = holding.node.mutator._send
        failed = [lease_id, FAILED, b"\xff\xfe", 0]
        assert await hsend(owner.node_id, partition, key, "release", failed, "one", 2.0)
        assert key not in leases.held
        gate.set()
        assert await holder == b"holder"
        assert calls == ["holder"]
    finally:
        await _close(nodes)


async def test_dead_waiters_do_not_pile_up_at_the_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    import gridkv.cluster.replication.leases as leases_module

    monkeypatch.setattr(leases_module, "_WAIT_SLICE", 0.01)
    nodes = await start_memory_cluster("edge-pile", 3, replica_count=2)
    owner, holding, waiting = nodes
    try:
        key, _ = _owned_by(owner)
        leases = owner.node.mutator.leases
        gate = asyncio.Event()
        holder = asyncio.ensure_future(
            holding.get_or_set(key, _loader([], "h", gate), lease_timeout=60)
        )
        await wait_until(lambda: key in leases.held, 5)
        waiter = asyncio.ensure_future(waiting.get_or_set(key, lambda: b"w", lease_timeout=60))
        await wait_until(lambda: leases.retries >= 30, 5)  # the waiter asked again 30 times
        assert len(leases.held[key].waiters) <= 2
        gate.set()
        await asyncio.gather(holder, waiter)
    finally:
        await _close(nodes)


def test_a_grant_that_comes_as_the_waiting_thread_gives_up_is_passed_on() -> None:
    net = MemoryNetwork()
    with GridKV(
        local_node_id="edge-lost",
        local_address="edge-lost:1",
        transport=MemoryTransport("edge-lost:1", net),
        disable_auth=True,
        read_timeout=0.2,
    ) as kv:
        flights = kv.node.mutator.singleflight
        original = flights.begin
        caller = threading.get_ident()

        async def begin(partition: int, key: str, lease_s: float) -> Any:
            got = await original(partition, key, lease_s)
            # Ctrl-C reaches the calling thread just as the grant comes back.
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(caller), ctypes.py_object(KeyboardInterrupt)
            )
            return got

        flights.begin = begin  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            kv.get_or_set("key", lambda: b"v", lease_timeout=0.2)
        flights.begin = original  # type: ignore[method-assign]
        try:
            later: object = kv.get_or_set("key", lambda: b"v", lease_timeout=0.2)
        except PeerTimeout as exc:
            later = exc
        assert later == b"v"
        assert "key" not in flights.flights


async def test_a_replica_watches_only_what_it_holds_for_at_most_its_own_ttl() -> None:
    nodes = await start_memory_cluster("edge-watch", 3, replica_count=1, near_cache_ttl=30)
    owner, other, asker = nodes
    try:
        key, partition = _owned_by(owner)
        address = owner.node.membership.address_of(owner.node_id)
        assert address is not None
        # A day asked for: 30 s given.
        reply: Any = await asker.node.messaging.request(
            address, WatchedGetRequest(asker.node_id, partition, key, 86_400_000), 2.0
        )
        assert reply.watched_ms == 30_000
        # A key of another partition than the one named, or a partition it does not hold:
        # answered, not watched.
        wrong = (partition + 1) % owner.node.options.partition_count
        reply = await asker.node.messaging.request(
            address, WatchedGetRequest(asker.node_id, wrong, key, 1000), 2.0
        )
        assert reply.watched_ms == 0
        other_key, other_partition = _owned_by(other)
        reply = await asker.node.messaging.request(
            address, WatchedGetRequest(asker.node_id, other_partition, other_key, 1000), 2.0
        )
        assert reply.watched_ms == 0
        assert len(owner.node.coordinator.watches) == 1
    finally:
        await _close(nodes)


async def test_the_watch_table_is_bounded_in_bytes_too() -> None:
    nodes = await start_memory_cluster(
        "edge-bytes", 2, replica_count=1, near_cache_watches=10, max_key_bytes=4096
    )
    owner, asker = nodes
    try:
        watches = owner.node.coordinator.watches
        table = owner.node.table
        address = owner.node.membership.address_of(owner.node_id)
        assert address is not None
        long_keys = [
            k
            for k in (f"{i:04d}" + "x" * 2000 for i in range(200))
            if table.owners(table.partition_of(k))[0] == owner.node_id
        ][:5]
        for key in long_keys:
            await asker.node.messaging.request(
                address,
                WatchedGetRequest(asker.node_id, table.partition_of(key), key, 1000),
                2.0,
            )
        # Ten watches allowed, 2,560 bytes of keys: one 2 kB key at a time.
        assert len(watches) == 1
        assert watches.evicted == 4
    finally:
        await _close(nodes)


async def test_without_a_watch_table_askers_keep_answers_the_hot_read_ttl_only() -> None:
    nodes = await start_memory_cluster(
        "edge-zero", 3, replica_count=1, near_cache_watches=0, hot_read_cache_ttl=0.2
    )
    owner, reader, _ = nodes
    try:
        key, _ = _owned_by(owner)
        await owner.set(key, b"v1")
        assert await reader.get(key) == b"v1"
        assert len(owner.node.coordinator.watches) == 0
        loop = asyncio.get_running_loop()
        asked = loop.time()
        await wait_until(lambda: not reader.node.coordinator.hot.lookup(key)[0], 5)
        assert loop.time() - asked < 1.0  # hot_read_cache_ttl, not 90% of near_cache_ttl
    finally:
        await _close(nodes)


async def test_many_long_keys_changed_at_once_are_all_invalidated() -> None:
    frame = 64 * 1024
    net = MemoryNetwork()
    names = ["edge-frame0:1", "edge-frame1:1", "edge-frame2:1"]
    nodes = [
        AsyncGridKV(
            local_node_id=name.split(":")[0],
            local_address=name,
            seed_addrs=[names[0]] if i else [],
            transport=MemoryTransport(name, net, timeout=0.5, max_frame_bytes=frame),
            disable_auth=True,
            replica_count=1,
            max_value_bytes=16 * 1024,
            network={"max_frame_bytes": frame},
        )
        for i, name in enumerate(names)
    ]
    for kv in nodes:
        await kv.start()
    for kv in nodes:
        await kv.wait_ready(timeout=10)
    await wait_until(lambda: all(len(kv.stats().cluster.members) == 3 for kv in nodes), 10)
    owner, reader, writer = nodes
    try:
        table = owner.node.table
        keys = [
            k
            for k in (f"{i:04d}" + "x" * 1000 for i in range(2000))
            if table.owners(table.partition_of(k))[0] == owner.node_id
        ][:100]
        await writer.set_many({k: b"v1" for k in keys})
        for key in keys:
            assert await reader.get(key) == b"v1"
        for key in keys:  # the owner's own writes, in one loop turn: one flush, 100 kB of keys
            await owner.set(key, b"v2")
        hot = reader.node.coordinator.hot
        await wait_until(lambda: not any(hot.lookup(k)[0] for k in keys), 5)
        assert owner.node.coordinator.watches.lost == 0
    finally:
        await _close(nodes)


# -- a second review, of the fixes above ---------------------------------------------------


async def test_a_stale_holders_late_failure_does_not_end_the_newer_flight() -> None:
    nodes = await start_memory_cluster("edge-late", 3, replica_count=2)
    try:
        key, _ = _owned_by(nodes[1])
        flights = nodes[0].node.mutator.singleflight
        gate_a, gate_b = asyncio.Event(), asyncio.Event()
        calls: list[str] = []

        async def load_a() -> bytes:
            calls.append("a")
            await gate_a.wait()
            raise RuntimeError("stale holder failed")

        a = asyncio.ensure_future(nodes[0].get_or_set(key, load_a, lease_timeout=0.2))
        await wait_until(lambda: calls == ["a"], 5)
        b = asyncio.ensure_future(
            nodes[0].get_or_set(key, _loader(calls, "b", gate_b), lease_timeout=0.2)
        )
        await wait_until(lambda: calls == ["a", "b"], 5)  # B took the lease over
        joined = flights.shared
        c = asyncio.ensure_future(nodes[0].get_or_set(key, lambda: b"C", lease_timeout=5))
        await wait_until(lambda: flights.shared > joined, 5)  # C waits on B's flight
        gate_a.set()
        with pytest.raises(RuntimeError, match="stale holder failed"):
            await a
        gate_b.set()
        assert await b == b"b"
        assert await c == b"b"
    finally:
        await _close(nodes)


async def test_a_caller_cancelled_in_the_turn_its_lease_arrives_passes_it_on() -> None:
    nodes = await start_memory_cluster("edge-turn", 3, replica_count=2)
    try:
        key, _ = _owned_by(nodes[1])
        owner = nodes[1].node.mutator.leases
        flights = nodes[0].node.mutator.singleflight
        real = flights._send
        gate = asyncio.Event()
        asking: list[asyncio.Task[Any]] = []

        async def send(
            partition: int, k: str, op: str, args: list[Any], timeout: float, level: str
        ) -> Any:
            answer = await real(partition, k, op, args, timeout, level)
            if op == "lease":
                task = asyncio.current_task()
                assert task is not None
                asking.append(task)
                await gate.wait()  # the answer waits until the test hooked the task
            return answer

        flights._send = send
        call = asyncio.ensure_future(nodes[0].get_or_set(key, lambda: b"A", lease_timeout=30))
        await wait_until(lambda: bool(asking), 5)
        asking[0].add_done_callback(lambda _: call.cancel())  # cancelled as the lease comes
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        await wait_until(lambda: key not in owner.held, 3)  # passed on, not held for 30 s
    finally:
        await _close(nodes)


async def test_a_cancelled_holders_failed_store_leaves_no_unretrieved_error() -> None:
    nodes = await start_memory_cluster("edge-store", 3, replica_count=2)
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context["message"]))
    try:
        key, _ = _owned_by(nodes[1])
        flights = nodes[0].node.mutator.singleflight
        real = flights._send
        gate = asyncio.Event()

        async def send(
            partition: int, k: str, op: str, args: list[Any], timeout: float, level: str
        ) -> Any:
            if op == "release":
                await gate.wait()
                raise GridKVError("the owner is gone")
            return await real(partition, k, op, args, timeout, level)

        flights._send = send
        call = asyncio.ensure_future(nodes[0].get_or_set(key, lambda: b"A", lease_timeout=5))
        await wait_until(lambda: bool(flights._releases), 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        gate.set()
        await wait_until(lambda: not flights._releases, 5)
        gc.collect()
        assert not [m for m in seen if "never retrieved" in m], seen
    finally:
        loop.set_exception_handler(previous)
        await _close(nodes)


async def test_callers_on_the_holders_node_get_the_newer_value_too() -> None:
    nodes = await start_memory_cluster("edge-newer", 3, replica_count=2)
    try:
        key, _ = _owned_by(nodes[1])
        flights = nodes[0].node.mutator.singleflight
        leases = nodes[1].node.mutator.leases
        gate = asyncio.Event()
        calls: list[str] = []
        holder = asyncio.ensure_future(
            nodes[0].get_or_set(key, _loader(calls, "loaded", gate), lease_timeout=5)
        )
        await wait_until(lambda: calls == ["loaded"], 5)
        joined = flights.shared
        local = asyncio.ensure_future(nodes[0].get_or_set(key, lambda: b"x", lease_timeout=5))
        remote = asyncio.ensure_future(nodes[2].get_or_set(key, lambda: b"y", lease_timeout=5))
        await wait_until(lambda: flights.shared > joined and bool(leases.held[key].waiters), 5)
        await nodes[1].set(key, b"new", consistency="all")  # written during the load
        gate.set()
        assert [await holder, await local, await remote] == [b"new"] * 3
    finally:
        await _close(nodes)
