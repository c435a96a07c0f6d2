"""get_or_set and @cached: a missing key is loaded once in the whole cluster, its waiters get
the value or the loader's error, and a loader that dies or gives up passes its lease on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from gridkv import (
    AsyncGridKV,
    GridKV,
    InvalidArgument,
    InvalidValue,
    LoaderFailed,
)
from gridkv.testing.memory_cluster import start_memory_cluster
from gridkv.testing.waiting import wait_for, wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport


async def _cluster(prefix: str, count: int = 3) -> list[AsyncGridKV]:
    return await start_memory_cluster(prefix, count, replica_count=2)


async def _close(nodes: list[AsyncGridKV]) -> None:
    for kv in nodes:
        await kv.close()


async def _eventually(kv: AsyncGridKV, key: str, value: bytes) -> None:
    got: list[bytes | None] = []

    async def read() -> None:
        got.append(await kv.get(key))

    for _ in range(500):
        await read()
        if got[-1] == value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{kv.node_id} read {got[-1]!r} for {key!r}, not {value!r}")


async def test_many_callers_on_every_node_run_the_loader_once() -> None:
    nodes = await _cluster("sf")
    try:
        calls = 0
        release = asyncio.Event()

        async def loader() -> bytes:
            nonlocal calls
            calls += 1
            await release.wait()
            return b"loaded"

        callers = [
            asyncio.ensure_future(kv.get_or_set("hot", loader, ttl=60))
            for kv in nodes
            for _ in range(100)
        ]
        # Every node's flight is under way (or waits at the owner) before the loader ends.
        await wait_until(lambda: calls == 1, 5)
        await wait_until(
            lambda: all("hot" in kv.node.mutator.singleflight.flights for kv in nodes), 5
        )
        release.set()
        assert await asyncio.gather(*callers) == [b"loaded"] * 300
        assert calls == 1
        # Stored at level one: every node reads it once it has spread.
        for kv in nodes:
            await _eventually(kv, "hot", b"loaded")
        # A later miss of another key loads again; a hit does not.
        assert await nodes[1].get_or_set("hot", loader) == b"loaded"
        assert calls == 1
    finally:
        await _close(nodes)


async def test_waiters_get_the_loaders_error_and_the_loader_its_own() -> None:
    nodes = await _cluster("sferr")
    try:
        started = asyncio.Event()
        fail = asyncio.Event()

        async def failing() -> bytes:
            started.set()
            await fail.wait()
            raise ValueError("the database is down")

        async def never() -> bytes:
            raise AssertionError("a waiter ran its loader")

        holder = asyncio.ensure_future(nodes[0].get_or_set("k", failing))
        await started.wait()
        waiters = [asyncio.ensure_future(kv.get_or_set("k", never)) for kv in nodes for _ in "ab"]
        owner = nodes[0].node.mutator.primary(nodes[0].node.table.partition_of("k"))
        leases = next(kv for kv in nodes if kv.node_id == owner).node.mutator.leases
        await wait_until(lambda: len(leases.held["k"].waiters) >= 2, 5)
        fail.set()
        with pytest.raises(ValueError, match="the database is down"):
            await holder
        for waiter in waiters:
            with pytest.raises(LoaderFailed, match=r"ValueError: the database is down"):
                await waiter
        # Nothing was stored; the next caller loads.
        assert await nodes[2].get_or_set("k", lambda: b"second") == b"second"
    finally:
        await _close(nodes)


async def test_a_hung_loader_loses_its_lease_to_a_waiter() -> None:
    nodes = await _cluster("sfhung")
    try:
        hang = asyncio.Event()

        async def hung() -> bytes:
            await hang.wait()
            return b"late"

        holder = asyncio.ensure_future(nodes[0].get_or_set("k", hung, lease_timeout=0.2))
        await wait_until(lambda: "k" in nodes[0].node.mutator.singleflight.flights, 5)
        # Another node's caller waits, then takes the lease over when it runs out.
        taken = await nodes[1].get_or_set("k", lambda: b"taken over", lease_timeout=0.2)
        assert taken == b"taken over"
        await _eventually(nodes[2], "k", b"taken over")
        hang.set()
        assert await holder == b"late"  # the first loader still stores what it loaded
    finally:
        await _close(nodes)


async def test_a_cancelled_holder_passes_the_lease_on_at_once() -> None:
    nodes = await _cluster("sfcancel")
    try:
        started = asyncio.Event()

        async def forever() -> bytes:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        holder = asyncio.ensure_future(nodes[0].get_or_set("k", forever, lease_timeout=60))
        await started.wait()
        waiter = asyncio.ensure_future(nodes[1].get_or_set("k", lambda: b"next", lease_timeout=60))
        owner = nodes[0].node.mutator.primary(nodes[0].node.table.partition_of("k"))
        leases = next(kv for kv in nodes if kv.node_id == owner).node.mutator.leases
        await wait_until(lambda: "k" in leases.held and leases.held["k"].waiters, 5)
        holder.cancel()
        # Well before the 60 s lease runs out, the waiter got it and loaded.
        assert await asyncio.wait_for(waiter, 5) == b"next"
        with pytest.raises(asyncio.CancelledError):
            await holder
    finally:
        await _close(nodes)


async def test_a_present_key_is_not_loaded_and_bad_calls_are_refused() -> None:
    nodes = await _cluster("sfbad", 2)
    kv = nodes[0]
    try:
        await kv.set("there", b"v")

        def refuse() -> bytes:
            raise AssertionError("loaded a key that exists")

        assert await kv.get_or_set("there", refuse) == b"v"
        bad: Any
        for bad in (0, -1, "1", True, 100_000):
            with pytest.raises(InvalidArgument, match="lease_timeout"):
                await kv.get_or_set("k", refuse, lease_timeout=bad)
        # A loader that returns no bytes fails its caller; waiters hear why.
        text: Any = lambda: "text"  # noqa: E731 - a wrong loader, as a caller may pass one
        with pytest.raises(InvalidValue, match="bytes-like"):
            await kv.get_or_set("k", text)
        assert await kv.get_or_set("k", lambda: b"ok") == b"ok"
        assert not any(kv.node.mutator.singleflight.flights for kv in nodes)
        assert not any(kv.node.mutator.leases.held for kv in nodes)
    finally:
        await _close(nodes)


async def test_cached_coroutines() -> None:
    nodes = await _cluster("sfcached", 2)
    try:
        calls: list[tuple[int, str]] = []

        def define(kv: AsyncGridKV) -> Any:
            @kv.cached(ttl=60)
            async def profile(user: int, *, lang: str = "en") -> dict[str, Any]:
                calls.append((user, lang))
                return {"user": user, "lang": lang}

            return profile

        here, there = define(nodes[0]), define(nodes[1])
        assert await here(1) == {"user": 1, "lang": "en"}
        assert await there(1) == {"user": 1, "lang": "en"}  # the same key on every node
        assert await there(1, lang="fr") == {"user": 1, "lang": "fr"}
        assert calls == [(1, "en"), (1, "fr")]

        @nodes[0].cached(key="user:{0}")
        async def named(user: int) -> int:
            return user * 2

        assert await named(21) == 42
        assert (
            await nodes[1].get_or_set("user:21", lambda: b"not loaded again") != b"not loaded again"
        )

        plain: Any = lambda: 1  # noqa: E731 - not a coroutine function
        with pytest.raises(InvalidArgument, match="coroutine functions"):
            nodes[0].cached()(plain)
        with pytest.raises(InvalidArgument, match="key"):
            nodes[0].cached(key=3)(named)  # type: ignore[arg-type]
    finally:
        await _close(nodes)


@contextmanager
def _blocking_pair() -> Iterator[tuple[GridKV, GridKV]]:
    net = MemoryNetwork()
    common: dict[str, Any] = {"disable_auth": True, "replica_count": 2}
    with (
        GridKV(
            local_node_id="ba",
            local_address="ba:1",
            transport=MemoryTransport("ba:1", net),
            **common,
        ) as a,
        GridKV(
            local_node_id="bb",
            local_address="bb:1",
            seed_addrs=["ba:1"],
            transport=MemoryTransport("bb:1", net),
            **common,
        ) as b,
    ):
        b.wait_ready(10)
        yield a, b


def test_blocking_threads_on_two_nodes_run_the_loader_once() -> None:
    with _blocking_pair() as (a, b):
        calls = 0
        lock = threading.Lock()
        gate = threading.Event()

        def loader() -> bytes:
            nonlocal calls
            with lock:
                calls += 1
            assert gate.wait(10)
            return b"v"

        results: list[bytes] = []

        def call(kv: GridKV) -> None:
            results.append(kv.get_or_set("key", loader, ttl=30))

        threads = [threading.Thread(target=call, args=(kv,)) for kv in (a, b) for _ in range(8)]
        for thread in threads:
            thread.start()
        wait_for("the first loader to start", lambda: calls == 1)
        gate.set()
        for thread in threads:
            thread.join(10)
        assert results == [b"v"] * 16
        assert calls == 1

        count = 0

        @b.cached(ttl=30)
        def square(n: int) -> int:
            nonlocal count
            count += 1
            return n * n

        assert [square(3), square(3), square(4)] == [9, 9, 16]
        assert count == 2
        with pytest.raises(InvalidArgument, match="plain functions"):

            async def coro() -> None:
                pass

            a.cached()(coro)

        def failing() -> bytes:
            raise KeyError("gone")

        with pytest.raises(KeyError):
            a.get_or_set("bad", failing)
        assert a.get_or_set("bad", lambda: b"fine") == b"fine"
