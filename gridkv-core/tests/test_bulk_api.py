"""get_many, set_many and delete_many on both facades: one request per replica for the keys
another node holds, per-key errors reported (not one failure for all), bad keys refused before
anything is done."""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest
from gridkv import (
    AsyncGridKV,
    BulkOperationError,
    EmptyKey,
    GridKV,
    InvalidArgument,
    ValueTooLarge,
)
from gridkv.testing.transports import node_options
from gridkv.testing.waiting import wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport

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
    names = [f"bulk-node{i}:1" for i in range(count_)]
    nodes = [
        AsyncGridKV(
            local_node_id=name.split(":")[0],
            local_address=name,
            seed_addrs=[names[0]] if i else [],
            replica_count=1,
            disable_auth=True,
            transport=MemoryTransport(name, net, timeout=0.5),
            **options,
        )
        for i, name in enumerate(names)
    ]
    for kv in nodes:
        await kv.start()
    for kv in nodes:
        await kv.wait_ready(timeout=10)
    await wait_until(lambda: all(len(kv.stats().cluster.members) == count_ for kv in nodes), 10)
    return nodes


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
