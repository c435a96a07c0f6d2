"""A writer that outruns its replicas waits for them, within bounds, on both facades.

Two nodes on the memory transport with a small ``replication_backlog_bytes``; the replica
stalls (reads nothing, as a paused process), so the owner's batches to it pile up: writes
wait for room (each stuck send frees its bytes when it times out), and the backlog stays
within the limit. A batcher whose sends never end refuses with a clear reason when no room
comes in time, to writers on the loop and on other threads alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gridkv import AsyncGridKV
from gridkv.cluster.replication.batching import Batcher
from gridkv.storage.base import Entry
from gridkv.testing.waiting import wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport

LIMIT = 4096
VALUE = b"x" * 400


def options(node_id: str, seeds: list[str]) -> dict[str, Any]:
    return {
        "local_node_id": node_id,
        "local_address": f"{node_id}:1",
        "seed_addrs": seeds,
        "disable_auth": True,
        "replica_count": 2,
        "replication_backlog_bytes": LIMIT,
        "replication_timeout": "300ms",
        "batch_threshold": 1,
        "gossip_interval": "1s",
        "failure_timeout": "30s",
        "log": {"level": "error"},
    }


async def test_writes_to_a_stalled_replica_are_paced_by_its_backlog() -> None:
    net = MemoryNetwork()
    owner = AsyncGridKV(**options("bp-a", []), transport=MemoryTransport("bp-a:1", net))
    replica = AsyncGridKV(**options("bp-b", ["bp-a:1"]), transport=MemoryTransport("bp-b:1", net))
    async with owner, replica:
        await replica.wait_ready(timeout=10)
        table = owner.node.ensure_table()
        mine = [
            k
            for k in (f"k{i}" for i in range(400))
            if table.owners(table.partition_of(k))[0] == "bp-a"
        ][:40]
        batcher = owner.node.coordinator.batcher
        replica.node.transport.stall(30)  # type: ignore[attr-defined]
        highest = 0
        for key in mine:
            await owner.set(key, VALUE)  # waits while the backlog is full
            highest = max(highest, batcher.backlog.get("bp-b", 0))
        # Bounded: the limit, plus the one entry that found it not yet full.
        assert LIMIT < highest <= LIMIT + len(VALUE) + 200
        assert batcher.waits >= 1
        replica.node.transport.stall(0)  # type: ignore[attr-defined]
        await owner.set(mine[0], b"after", consistency="all")
        assert await replica.get(mine[0], consistency="all") == b"after"


async def test_no_room_within_the_time_out_is_a_clear_refusal() -> None:
    stuck: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def never(replica: str, entries: list[tuple[int, Entry]]) -> None:
        await stuck

    batcher = Batcher(1, 0.01, 1 << 20, asyncio.get_running_loop, never, limit=1024)
    for i in range(5):
        batcher.add("r1", 0, Entry(f"k{i}", b"v" * 300, 1, "w", 0))
    assert batcher.full
    assert not await batcher.wait_room(0.05)
    took = await asyncio.to_thread(batcher.room, 0.05)  # a blocking writer's wait
    assert took is False
    assert "replication backlog to r1" in batcher.refusal("k9", 0.05)
    stuck.set_result(None)  # the sends end: room again, for both kinds of writer
    await wait_until(lambda: not batcher.full)
    assert await batcher.wait_room(0.05)
    assert await asyncio.to_thread(batcher.room, 0.05)
    assert batcher.backlog == {}
