"""A writer that outruns its replicas waits for them, within bounds, on both facades.

Two nodes on the memory transport with a small ``replication_backlog_bytes``; the replica
stalls (reads nothing, as a paused process), so the owner's batches to it pile up: writes
wait for room (each stuck send frees its bytes when it times out), and the backlog stays
within the limit. A batcher whose sends never end refuses with a clear reason when no room
comes in time, to writers on the loop and on other threads alike.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gridkv import AsyncGridKV, GridKV
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

    async def never(replica: str, entries: list[tuple[int, Entry]]) -> bool:
        await stuck
        return True

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


def entry(i: int) -> Entry:
    return Entry(f"k{i}", b"v" * 300, 1, "w", 0)


async def test_writers_woken_together_wait_on_when_one_fills_it_again() -> None:
    # Review finding: one batch's room woke every waiting writer; the first filled it again,
    # and the others were refused at once, long before their time-out.
    gates: list[asyncio.Future[None]] = []

    async def send(replica: str, entries: list[tuple[int, Entry]]) -> bool:
        gate = asyncio.get_running_loop().create_future()
        gates.append(gate)
        await gate
        return True

    batcher = Batcher(1, 0.01, 1 << 20, asyncio.get_running_loop, send, limit=1100)
    for i in range(4):
        batcher.add("r1", 0, entry(i))
    await wait_until(lambda: len(gates) == 4)
    assert batcher.full

    async def writer(n: int) -> bool:
        ok = await batcher.wait_room(5.0)
        if ok:
            batcher.add("r1", 0, entry(100 + n))  # what the writer does next
        return ok

    writers = [asyncio.ensure_future(writer(n)) for n in range(3)]
    gates[0].set_result(None)  # room for one
    await wait_until(lambda: sum(w.done() for w in writers) == 1)
    assert not any(w.done() and not w.result() for w in writers)  # the others wait on

    def sends_end_and_writers_done() -> bool:  # each writer's own send included
        for gate in gates:
            if not gate.done():
                gate.set_result(None)
        return all(w.done() for w in writers)

    await wait_until(sends_end_and_writers_done)
    assert [w.result() for w in writers] == [True, True, True]


async def test_an_abort_leaves_no_backlog_and_wakes_waiting_writers() -> None:
    # Review finding: sends cancelled before they started never gave their bytes back, so
    # the batcher stayed full after the node stopped.
    async def slow(replica: str, entries: list[tuple[int, Entry]]) -> bool:
        await asyncio.sleep(10)
        return True

    batcher = Batcher(1, 0.01, 1 << 20, asyncio.get_running_loop, slow, limit=1024)
    for i in range(5):
        batcher.add("r1", 0, entry(i))
    assert batcher.full
    await batcher.abort()
    assert (batcher.backlog, batcher.full) == ({}, False)
    assert await asyncio.to_thread(batcher.room, 0.2)


def test_a_blocking_write_on_the_loop_thread_does_not_wait_for_room() -> None:
    # Review finding: a local write from a hook on the node's loop thread waited for room
    # that only that loop could make: the node froze for replication_timeout, then refused.
    opts = options("bp-loop", [])
    opts["replica_count"] = 1
    with GridKV(**opts, transport=MemoryTransport("bp-loop:1", MemoryNetwork())) as kv:
        batcher = kv.node.coordinator.batcher
        batcher.over_limit.add("somebody")  # a replica far behind

        async def from_a_hook() -> float:
            started = time.monotonic()
            kv.set("k", b"v")
            return time.monotonic() - started

        took = kv._runner.submit(from_a_hook()).result(10)
        assert took < 0.1
        assert kv.get("k") == b"v"
        batcher.over_limit.clear()
