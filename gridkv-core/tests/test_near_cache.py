"""The near cache: a node keeps what it read from another node until the replica that
answered says the key changed (not only until a short TTL runs out), bounded in memory on
both sides, and always reads its own writes."""

from __future__ import annotations

import asyncio
from typing import Any

from gridkv import AsyncGridKV
from gridkv.testing.memory_cluster import start_memory_cluster
from gridkv.testing.waiting import wait_until


async def _cluster(prefix: str, **options: Any) -> list[AsyncGridKV]:
    # One replica per key: two nodes of three hold none of a given key.
    return await start_memory_cluster(prefix, 3, replica_count=1, **options)


def _key_owned_by(owner: AsyncGridKV, prefix: str = "k") -> str:
    table = owner.node.table
    for i in range(10_000):
        key = f"{prefix}{i}"
        if table.owners(table.partition_of(key))[0] == owner.node_id:
            return key
    raise AssertionError("no key found")


def _cached(kv: AsyncGridKV, key: str) -> bool:
    return kv.node.coordinator.hot.lookup(key)[0]


async def _close(nodes: list[AsyncGridKV]) -> None:
    for kv in nodes:
        await kv.close()


async def test_a_write_anywhere_reaches_every_near_cache_long_before_its_ttl() -> None:
    owner, reader, writer = nodes = await _cluster("near")
    try:
        key = _key_owned_by(owner)
        await writer.set(key, b"v1")
        assert await reader.get(key) == b"v1"
        assert _cached(reader, key)
        watches = owner.node.coordinator.watches
        assert len(watches) == 1
        # Read again and again: answered from the reader's memory, the owner is not asked.
        asked_before = watches.watched
        for _ in range(200):
            assert await reader.get(key) == b"v1"
        assert watches.watched == asked_before
        # Another node writes: the owner tells the reader, which reads the new value at
        # once (near_cache_ttl is 30 s; without the invalidation it would keep v1 that long).
        await writer.set(key, b"v2")
        await wait_until(lambda: not _cached(reader, key), 5)
        assert await reader.get(key) == b"v2"
        assert reader.node.coordinator.reader.invalidated >= 1
        # A delete too.
        await writer.delete(key)
        await wait_until(lambda: not _cached(reader, key), 5)
        assert await reader.get(key) is None
    finally:
        await _close(nodes)


async def test_a_missing_key_read_is_watched_too_and_the_writer_reads_its_own_write() -> None:
    owner, reader, _ = nodes = await _cluster("nearmiss")
    try:
        key = _key_owned_by(owner)
        assert await reader.get(key) is None
        assert _cached(reader, key)
        await owner.set(key, b"born")  # the owner's own fast-path write tells the reader too
        await wait_until(lambda: not _cached(reader, key), 5)
        assert await reader.get(key) == b"born"
        await reader.set(key, b"mine")  # read-your-writes on the node that wrote
        assert await reader.get(key) == b"mine"
    finally:
        await _close(nodes)


async def test_the_watch_table_is_bounded_and_drops_with_an_invalidation() -> None:
    owner, reader, _ = nodes = await _cluster("nearcap", near_cache_watches=2)
    try:
        keys = [_key_owned_by(owner, p) for p in ("a", "b", "c")]
        for key in keys:
            await owner.set(key, key.encode())
        for key in keys:
            assert await reader.get(key) == key.encode()
        watches = owner.node.coordinator.watches
        assert len(watches) == 2
        assert watches.evicted == 1
        # The oldest watch went, and the reader was told to forget that key.
        await wait_until(lambda: not _cached(reader, keys[0]), 5)
        assert _cached(reader, keys[1]) and _cached(reader, keys[2])
    finally:
        await _close(nodes)


async def test_a_copy_never_outlives_its_watch() -> None:
    owner, reader, _ = nodes = await _cluster("nearttl", near_cache_ttl=0.3)
    try:
        key = _key_owned_by(owner)
        await owner.set(key, b"v")
        loop = asyncio.get_running_loop()
        asked = loop.time()
        assert await reader.get(key) == b"v"
        await wait_until(lambda: not _cached(reader, key), 5)
        assert loop.time() - asked <= 0.3 + 0.05  # gone by 90% of the watch (plus a tick)
    finally:
        await _close(nodes)


async def test_watching_off_keeps_answers_for_the_hot_read_ttl_only() -> None:
    owner, reader, _ = nodes = await _cluster("nearoff", near_cache_ttl=0, hot_read_cache_ttl=0.2)
    try:
        key = _key_owned_by(owner)
        await owner.set(key, b"v")
        assert await reader.get(key) == b"v"
        assert len(owner.node.coordinator.watches) == 0
        await wait_until(lambda: not _cached(reader, key), 5)
    finally:
        await _close(nodes)
