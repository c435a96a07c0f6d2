"""incr, decr, add, touch and exists on both facades: atomic on the key's primary owner, the
counters kept as Redis keeps them (decimal ASCII), exact under concurrent callers on every
node."""

from __future__ import annotations

import asyncio
import time
from itertools import count
from typing import Any

import pytest
from gridkv import AsyncGridKV, GridKV, InvalidArgument, OperationRefused, VersionMismatch
from gridkv.testing.memory_cluster import start_memory_cluster
from gridkv.testing.transports import node_options

_ids = count()


def _options(**overrides: Any) -> dict[str, Any]:
    options = node_options(f"atomic{next(_ids)}")
    options.update(overrides)
    return options


def _expiry(kv: AsyncGridKV | GridKV, key: str) -> int:
    node = kv.node
    entry = node.storage.get_entry(node.table.partition_of(key), key)
    assert entry is not None
    return entry.expires_at


async def test_counters_are_decimal_text_and_refuse_what_is_not() -> None:
    async with AsyncGridKV(**_options()) as kv:
        assert await kv.incr("hits") == 1
        assert await kv.incr("hits", 10) == 11
        assert await kv.get("hits") == b"11"
        assert await kv.decr("hits", 20) == -9
        await kv.set("text", b"abc")
        with pytest.raises(OperationRefused, match="not an integer"):
            await kv.incr("text")
        await kv.set("big", str(2**63 - 1).encode())
        with pytest.raises(OperationRefused, match="overflow"):
            await kv.incr("big")
        for bad in (True, 1.5, 2**63, "1"):
            with pytest.raises(InvalidArgument, match="the delta must be an int"):
                await kv.incr("hits", bad)  # type: ignore[arg-type]
        await kv.set("ttl", b"5", ttl=100)
        before = _expiry(kv, "ttl")
        assert await kv.incr("ttl") == 6
        assert _expiry(kv, "ttl") == before  # the expiry stays


async def test_add_touch_and_exists() -> None:
    async with AsyncGridKV(**_options()) as kv:
        assert await kv.add("k", b"first") is True
        assert await kv.add("k", b"second") is False
        assert await kv.get("k") == b"first"
        assert await kv.exists("k") and not await kv.exists("missing")
        assert await kv.touch("k", 100) is True
        now = int(time.time() * 1000)
        assert now + 99_000 <= _expiry(kv, "k") <= now + 100_500
        assert await kv.touch("k", 0) is True
        assert _expiry(kv, "k") == 0
        assert await kv.touch("missing", 10) is False
        assert await kv.add("short", b"v", ttl=0.05) is True
        await asyncio.sleep(0)
        deadline = time.monotonic() + 5
        while await kv.exists("short"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert await kv.add("short", b"again") is True


def test_the_blocking_facade_has_them_too() -> None:
    with GridKV(**_options()) as kv:
        assert kv.incr("n") == 1
        assert kv.decr("n", 3) == -2
        assert kv.add("a", b"1") and not kv.add("a", b"2")
        assert kv.touch("a", 50) and not kv.touch("nope", 50)
        assert kv.exists("a") and not kv.exists("nope")


async def test_increments_from_every_node_are_exact() -> None:
    nodes = await start_memory_cluster("atom", 3, replica_count=2)
    try:

        async def hammer(kv: AsyncGridKV) -> None:
            for _ in range(100):
                await kv.incr("shared")

        await asyncio.gather(*(hammer(kv) for kv in nodes for _ in range(3)))
        # The primary owner answers with the total at once; the others read it as it spreads.
        assert sorted([await kv.incr("shared", 0) for kv in nodes]) == [900, 900, 900]
    finally:
        for kv in nodes:
            await kv.close()


async def test_keys_and_clear() -> None:
    async with AsyncGridKV(**_options()) as kv:
        for i in range(20):
            await kv.set(f"user:{i}", b"v")
        await kv.set("other", b"v")
        assert sorted(await kv.keys("user:*")) == sorted(f"user:{i}" for i in range(20))
        assert sorted(await kv.keys("user:1?")) == sorted(f"user:{i}" for i in range(10, 20))
        assert len(await kv.keys()) == 21
        assert await kv.clear() == 21
        assert await kv.keys() == []
        with pytest.raises(InvalidArgument, match="the pattern must be a str"):
            await kv.keys(b"*")  # type: ignore[arg-type]


def test_keys_and_clear_blocking() -> None:
    with GridKV(**_options()) as kv:
        kv.set("a", b"1")
        kv.set("b", b"2")
        assert sorted(kv.keys()) == ["a", "b"]
        assert kv.clear() == 2
        assert kv.keys() == []


async def test_compare_and_set_over_the_version_read() -> None:
    nodes = await start_memory_cluster("cas", 3, replica_count=2)
    try:
        a, b, _ = nodes
        assert await a.get_with_version("doc") is None
        first = await a.compare_and_set("doc", 0, b"v1")  # 0: only if it has no value
        assert first > 0
        with pytest.raises(VersionMismatch) as info:
            await b.compare_and_set("doc", 0, b"other")
        assert info.value.current == first
        value, version = await b.get_with_version("doc") or (b"", 0)
        assert (value, version) == (b"v1", first)
        second = await b.compare_and_set("doc", version, b"v2", ttl=100)
        assert second > first
        with pytest.raises(VersionMismatch):
            await a.compare_and_set("doc", first, b"stale")  # lost to b's write
        assert await a.get("doc") == b"v2"
        with pytest.raises(InvalidArgument, match="expected_version"):
            await a.compare_and_set("doc", -1, b"x")

        # Many writers, each retrying from what it read: every update lands once.
        async def bump(kv: AsyncGridKV) -> None:
            for _ in range(20):
                while True:
                    got = await kv.get_with_version("counter")
                    current = int(got[0]) if got else 0
                    try:
                        await kv.compare_and_set(
                            "counter", got[1] if got else 0, b"%d" % (current + 1)
                        )
                        break
                    except VersionMismatch:
                        continue

        await asyncio.gather(*(bump(kv) for kv in nodes for _ in range(2)))
        assert await a.get("counter") == b"120"
    finally:
        for kv in nodes:
            await kv.close()


def test_compare_and_set_blocking() -> None:
    with GridKV(**_options()) as kv:
        version = kv.compare_and_set("k", 0, b"1")
        assert kv.get_with_version("k") == (b"1", version)
        with pytest.raises(VersionMismatch):
            kv.compare_and_set("k", version + 1, b"2")
        assert kv.compare_and_set("k", version, b"2") > version


async def test_iter_keys_gives_every_key_once() -> None:
    async with AsyncGridKV(**_options()) as kv:
        await kv.set_many({f"it:{i}": b"v" for i in range(500)} | {"other": b"v"})
        seen = [k async for k in kv.iter_keys("it:*", window=10)]
        assert sorted(seen) == sorted(f"it:{i}" for i in range(500))
        assert len([k async for k in kv.iter_keys()]) == 501


async def test_a_plain_write_right_after_a_remote_atomic_operation_comes_after_it() -> None:
    # The primary's answer carries its clock, so the asker's next write gets a later version
    # even within the same millisecond (it was ordered first, and lost, before).
    nodes = await start_memory_cluster("atomclock", 2, replica_count=1)
    try:
        a, b = nodes
        table = a.node.table
        keys = [
            k
            for k in (f"c{i}" for i in range(400))
            if table.owners(table.partition_of(k))[0] == b.node_id
        ]
        for key in keys[:100]:
            await a.incr(key)
            await a.set(key, b"plain")
            assert await a.get(key) == b"plain", key
            assert await a.add(key + "x", b"1")
            await a.delete(key + "x")
    finally:
        for kv in nodes:
            await kv.close()
