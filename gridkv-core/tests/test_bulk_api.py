"""get_many, set_many and delete_many on both facades: one request per replica for the keys
another node holds, per-key errors reported (not one failure for all), bad keys refused before
anything is done."""

from __future__ import annotations

import asyncio
from itertools import count
from typing import Any

import pytest
from gridkv import (
    AsyncGridKV,
    BulkOperationError,
    EmptyKey,
    GridKV,
    InvalidArgument,
    InvalidKey,
    ValueTooLarge,
)
from gridkv.testing.memory_cluster import start_memory_cluster
from gridkv.testing.transports import node_options
from gridkv.transport import MemoryNetwork
from gridkv.wire.messages import ErrorReply, KeysRequest

_ids = count()


def _options(**overrides: Any) -> dict[str, Any]:
    options = node_options(f"bulk{next(_ids)}")
    options.update(overrides)
    return options


async def test_one_node() -> None:
    async with AsyncGridKV(**_options(replica_count=1)) as kv:
        assert await kv.set_many({f"k{i}": b"v%d" % i for i in range(50)}, ttl=100) == {}
        got = await kv.get_many([f"k{i}" for i in range(60)])
        assert got == {f"k{i}": b"v%d" % i for i in range(50)}  # k50..k59 are missing
        assert await kv.get_many(["k1", "k1", "k2"]) == {"k1": b"v1", "k2": b"v2"}
        assert await kv.get_many([]) == {}
        assert await kv.delete_many([f"k{i}" for i in range(25)]) == {}
        assert len(await kv.get_many([f"k{i}" for i in range(50)])) == 25
        assert await kv.get_many(["k30"], consistency="quorum") == {"k30": b"v30"}


async def test_bad_arguments_do_nothing() -> None:
    async with AsyncGridKV(**_options(max_value_bytes=10)) as kv:
        with pytest.raises(EmptyKey):
            await kv.set_many({"a": b"1", "": b"2"})
        with pytest.raises(ValueTooLarge):
            await kv.set_many({"a": b"1", "b": b"x" * 11})
        assert await kv.get_many(["a", "b"]) == {}
        with pytest.raises(InvalidArgument, match="a single key"):
            await kv.get_many("abc")
        with pytest.raises(InvalidArgument, match="iterable of keys"):
            await kv.delete_many(5)  # type: ignore[arg-type]


async def _cluster(net: MemoryNetwork, count_: int = 3, **options: Any) -> list[AsyncGridKV]:
    return await start_memory_cluster("bulk-node", count_, net, replica_count=1, **options)


async def test_keys_on_other_nodes_take_one_request_per_replica() -> None:
    net = MemoryNetwork()
    nodes = await _cluster(net)
    try:
        reader = nodes[0]
        keys = [f"key:{i}" for i in range(300)]
        assert await nodes[1].set_many({k: k.encode() for k in keys}) == {}
        sent = reader.node.transport.stats().requests_sent
        got = await reader.get_many(keys)
        assert got == {k: k.encode() for k in keys}
        # replica_count 1: the keys are on three nodes; two thirds of them on the two others,
        # at most 256 keys a request.
        assert reader.node.transport.stats().requests_sent - sent <= 4
    finally:
        for kv in nodes:
            await kv.close()


async def test_a_replica_that_fails_costs_only_its_keys() -> None:
    net = MemoryNetwork()
    # The view keeps the dead node throughout (no failover to hide its keys' failures).
    slow = {"failure_timeout": 60, "suspect_timeout": 60}
    nodes = await _cluster(net, read_timeout=0.3, replication_timeout=0.3, **slow)
    try:
        keys = [f"key:{i}" for i in range(60)]
        assert await nodes[0].set_many({k: b"v" for k in keys}) == {}
        table = nodes[0].node.table
        lost = {k for k in keys if table.owners(table.partition_of(k))[0] == "bulk-node2"}
        assert lost
        await nodes[2].node.kill()  # gone without a word; the view still holds it
        with pytest.raises(BulkOperationError) as info:
            await nodes[0].get_many(keys)
        assert set(info.value.errors) == lost
        assert info.value.values == {k: b"v" for k in keys if k not in lost}
        errors = await nodes[0].delete_many(keys)
        assert set(errors) == lost
        assert await nodes[0].get_many([k for k in keys if k not in lost]) == {}
    finally:
        for kv in nodes:
            await kv.close(timeout=0.5)  # the dead node takes no handoff


def test_the_blocking_facade() -> None:
    with GridKV(**_options()) as kv:
        assert kv.set_many({"a": b"1", "b": b"2"}) == {}
        assert kv.get_many(["a", "b", "c"]) == {"a": b"1", "b": b"2"}
        assert kv.delete_many(["a"]) == {}
        assert kv.get_many(["a", "b"]) == {"b": b"2"}


# -- from a hostile review: each fails on the code before its fix ---------------------------


async def test_clear_counts_every_key_it_deletes() -> None:
    net = MemoryNetwork()
    nodes = await _cluster(net)
    try:
        assert await nodes[1].set_many({f"c{i}": b"v" for i in range(30)}) == {}
        assert await nodes[0].clear() == 30
        assert await nodes[2].keys() == []
    finally:
        for kv in nodes:
            await kv.close()


async def test_a_node_reads_its_own_atomic_writes_on_keys_it_does_not_hold() -> None:
    net = MemoryNetwork()
    nodes = await _cluster(net)
    try:
        kv = nodes[0]
        table = kv.node.table
        key = next(
            f"ryw{i}"
            for i in range(1000)
            if table.owners(table.partition_of(f"ryw{i}"))[0] != "bulk-node0"
        )
        assert await kv.get(key) is None  # now in this node's hot read cache
        assert await kv.add(key, b"v") is True
        assert await kv.get(key) == b"v"
        await kv.delete(key)
        assert await kv.get(key) is None
        assert await kv.incr(key, 7) == 7
        assert await kv.get(key) == b"7"
    finally:
        for kv in nodes:
            await kv.close()


async def test_a_bulk_write_keeps_a_bounded_number_of_writes_under_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with AsyncGridKV(**_options(replica_count=1)) as kv:
        write = kv._write
        running = most = 0

        async def counted(*args: Any) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await asyncio.sleep(0)
                await write(*args)
            finally:
                running -= 1

        monkeypatch.setattr(kv, "_write", counted)
        assert await kv.set_many({f"b{i}": b"v" for i in range(1000)}) == {}
        assert most <= 64
        assert len(await kv.get_many([f"b{i}" for i in range(1000)])) == 1000


async def test_a_get_many_of_large_values_needs_no_time_out() -> None:
    net = MemoryNetwork()
    big: dict[str, Any] = {"max_value_bytes": 1 << 20, "network": {"max_frame_bytes": 3 << 20}}
    nodes = await _cluster(net, read_timeout=30, **big)
    try:
        keys = [f"big{i}" for i in range(12)]
        assert await nodes[1].set_many({k: b"x" * (1 << 20) for k in keys}) == {}
        loop = asyncio.get_running_loop()
        started = loop.time()
        got = await nodes[0].get_many(keys)
        assert len(got) == 12 and all(len(v) == 1 << 20 for v in got.values())
        # The answers stay within a frame (the rest read one by one): no 30 s wait for an
        # answer that could not be sent.
        assert loop.time() - started < 30
    finally:
        for kv in nodes:
            await kv.close()


async def test_bad_containers_and_keys_get_gridkv_errors() -> None:
    async with AsyncGridKV(**_options()) as kv:
        with pytest.raises(InvalidKey):
            await kv.get_many([["a"]])  # type: ignore[list-item]
        with pytest.raises(InvalidKey):
            await kv.delete_many([["a"]])  # type: ignore[list-item]
        for bad in (None, 5, "ab", [("a", b"1")]):
            with pytest.raises(InvalidArgument, match="set_many"):
                await kv.set_many(bad)  # type: ignore[arg-type]
        for delta in (-(2**63), 2**63):
            with pytest.raises(InvalidArgument, match=f"got {delta}"):
                await kv.decr("n", delta)
        assert await kv.decr("n", 2**63 - 1) == -(2**63) + 1
    with GridKV(**_options()) as blocking:
        with pytest.raises(InvalidKey):
            blocking.get_many([["a"]])  # type: ignore[list-item]
        with pytest.raises(InvalidArgument, match="set_many"):
            blocking.set_many(None)  # type: ignore[arg-type]


async def test_an_answer_too_large_for_a_frame_is_an_error_the_asker_hears_at_once() -> None:
    # Regression: the router encoded an answer outside its error handling; one larger than a
    # frame left the asker waiting for its time-out.
    options = _options(disable_auth=True, max_value_bytes=1000)
    options["network"] = {**options["network"], "max_frame_bytes": 4096}
    async with AsyncGridKV(**options) as kv:
        await kv.set_many({"k" * 200 + str(i): b"v" for i in range(100)})
        node = kv.node
        request = KeysRequest("asker", list(range(node.options.partition_count)), b"", 0, False)
        frame = node.router.on_frame("peer", node.messaging.encode(request), sender="asker")
        assert isinstance(frame, bytes)
        answer = node.messaging.decode(frame)
        assert isinstance(answer, ErrorReply) and "frame limit" in answer.message
