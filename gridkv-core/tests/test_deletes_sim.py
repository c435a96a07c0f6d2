"""Deletes stay deleted: tombstones under partitions, isolations and short tombstone_ttl.

A workload of quorum writes and deletes runs while the network splits and single nodes are cut
off for several seconds at a time, with ``tombstone_ttl`` of one second so tombstones are
collected during the run. Every key is written by one client at a time, so the outcome each
key must end in is known: the last acknowledged operation, or one of the failed ones that
followed it (a failed quorum write may still have reached a replica). An acknowledged delete
that comes back, or an acknowledged write that is lost, fails the test.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import pytest
from gridkv.base.errors import GridKVError
from gridkv.testing import Simulation, run_virtual

OPTIONS: dict[str, Any] = {
    "tombstone_ttl": "1s",
    "handoff_timeout": "2s",
    "anti_entropy_interval": "500ms",
    "read_timeout": "500ms",
    "replication_timeout": "500ms",
    "storage": {"expiry_interval": "200ms"},
}


def simulate(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run_virtual(scenario())


class History:
    """What each key may end as: the last acknowledged value and the failed ones after it."""

    def __init__(self) -> None:
        self.allowed: dict[str, list[bytes | None]] = {}
        self.acked_deletes = 0
        self.acked_writes = 0
        self.failed = 0

    def acked(self, key: str, value: bytes | None) -> None:
        self.allowed[key] = [value]
        if value is None:
            self.acked_deletes += 1
        else:
            self.acked_writes += 1

    def failed_op(self, key: str, value: bytes | None) -> None:
        self.allowed.setdefault(key, [None]).append(value)
        self.failed += 1


async def workload(sim: Simulation, history: History, client: int, stop: asyncio.Event) -> None:
    """Key after key: written one to three times, then deleted and left alone.

    Each operation goes through a random live node at quorum. A deleted key is never touched
    again, so a stale copy that comes back after its tombstone was collected shows.
    """
    rng = random.Random(f"client {client}")
    n = 0
    while not stop.is_set():
        key = f"c{client}-k{n}"
        n += 1
        ops: list[bytes | None] = [f"{key}/{i}".encode() for i in range(rng.randint(1, 3))]
        ops.append(None)
        for value in ops:
            kv = sim.client(rng.choice(sorted(node.node_id for node in sim.live())))
            try:
                if value is None:
                    await kv.delete(key, consistency="quorum")
                else:
                    await kv.set(key, value, consistency="quorum")
            except GridKVError:
                history.failed_op(key, value)
            else:
                history.acked(key, value)
            await asyncio.sleep(rng.uniform(0.01, 0.05))


async def faults(sim: Simulation, seed: int, cycles: int) -> None:
    rng = random.Random(f"faults {seed}")
    ids = sorted(sim.nodes)
    for _ in range(cycles):
        if rng.random() < 0.5:
            victim = rng.choice(ids)
            sim.partition([victim], [i for i in ids if i != victim])
        else:
            shuffled = rng.sample(ids, len(ids))
            sim.partition(shuffled[:2], shuffled[2:])
        await sim.run_for(rng.uniform(2.0, 10.0))  # the fault schedule: time is the test
        sim.heal()
        await sim.run_for(6.0)  # quiet: views settle, tombstones may be collected


def final_values(sim: Simulation, key: str) -> dict[str, bytes | None]:
    """What each replica of ``key`` holds (None for a tombstone or nothing)."""
    out: dict[str, bytes | None] = {}
    node = sim.live()[0]
    table = node.ensure_table()
    partition = table.partition_of(key)
    for owner in table.owners(partition):
        entry = sim.nodes[owner].storage.get_entry(partition, key)
        out[owner] = None if entry is None else entry.value
    return out


def in_agreement(sim: Simulation) -> bool:
    """Whether the replicas of every partition hold the same versions (anti-entropy is done)."""
    table = sim.live()[0].ensure_table()
    return all(
        len({sim.nodes[n].storage.digest(p) for n in table.owners(p)}) == 1
        for p in range(table.partition_count)
    )


def held(sim: Simulation, node_ids: Iterable[str], keys: list[str]) -> list[tuple[str, str]]:
    """``(node, key)`` for each of ``keys`` one of the nodes still stores (value or tombstone)."""
    table = sim.live()[0].ensure_table()
    return [
        (n, k)
        for n in node_ids
        for k in keys
        if sim.nodes[n].storage.get_entry(table.partition_of(k), k) is not None
    ]


def test_acknowledged_deletes_never_come_back_under_partitions_and_isolations() -> None:
    async def scenario() -> None:
        async with Simulation(seed=91, options=OPTIONS) as sim:
            await sim.start(5)
            await sim.wait_until(sim.converged, timeout=10)
            history = History()
            stop = asyncio.Event()
            clients = [asyncio.create_task(workload(sim, history, c, stop)) for c in range(4)]
            await faults(sim, seed=91, cycles=8)
            stop.set()
            await asyncio.gather(*clients)
            await sim.wait_until(sim.converged, timeout=30)
            keys = sorted(history.allowed)

            def settled() -> bool:
                return all(len(set(final_values(sim, k).values())) == 1 for k in keys)

            await sim.wait_until(settled, timeout=30)
            wrong = {
                key: (final_values(sim, key), history.allowed[key])
                for key in keys
                if next(iter(final_values(sim, key).values())) not in history.allowed[key]
            }
            assert wrong == {}
            for key in keys:
                got = await sim.client("n0").get(key, consistency="quorum")
                assert got in history.allowed[key]
            collected = sum(n.storage.stats().tombstones_collected for n in sim.live())
            # The hazard was there: deletes acknowledged, their tombstones collected meanwhile.
            assert history.acked_deletes > 100
            assert collected > 50
            assert history.failed > 0

    simulate(scenario)


SEPARATION_OPTIONS: dict[str, Any] = {
    **OPTIONS,
    "anti_entropy_interval": "300ms",
    "membership": {"dead_retention": "3s"},
}


@pytest.mark.parametrize("seed", [4, 6, 7])
def test_a_split_longer_than_dead_retention_heals_and_the_smaller_side_brings_nothing_back(
    seed: int,
) -> None:
    # Both sides forget each other; the larger one collects the tombstones of deletes the
    # smaller one never saw. After the heal the sides meet again through the seeds, and the
    # smaller side drops what it held from before, so no deleted key comes back.
    async def scenario() -> None:
        async with Simulation(seed=seed, options=SEPARATION_OPTIONS) as sim:
            await sim.start(5)
            await sim.wait_until(sim.converged, timeout=10)
            kv = sim.client("n0")
            table = sim.nodes["n0"].ensure_table()
            keys = [f"k{i}" for i in range(200)]
            for key in keys:
                await kv.set(key, b"old", consistency="all")
            hot = [k for k in keys if {"n3", "n4"} & set(table.owners(table.partition_of(k)))]
            majority, minority = ("n0", "n1", "n2"), ("n3", "n4")
            sim.partition(minority, majority)
            await sim.wait_until(
                lambda: all(sim.all_see(n, "dead", majority) for n in minority), timeout=10
            )
            for key in hot:
                await kv.delete(key, consistency="quorum")

            def forgotten_and_collected() -> bool:  # past dead_retention and tombstone_ttl
                return all(
                    not set(minority) & set(sim.view(n))
                    and sim.nodes[n].storage.stats().tombstones == 0
                    for n in majority
                )

            await sim.wait_until(forgotten_and_collected, timeout=30)
            # Each deleted key's tombstone was on the three nodes left, and is gone from each
            # (some more than once: anti-entropy may bring one back from a peer that has not
            # swept yet, to be collected again).
            collected = [sim.nodes[n].storage.stats().tombstones_collected for n in majority]
            assert min(collected) >= len(hot)
            sim.heal()
            await sim.wait_until(sim.converged, timeout=30)
            # The smaller side drops what it held from before, and the replicas agree: nothing
            # is left to come back later.
            await sim.wait_until(lambda: held(sim, minority, hot) == [], timeout=10)
            await sim.wait_until(lambda: in_agreement(sim), timeout=10)
            back = [k for k in hot if await kv.get(k, consistency="quorum") is not None]
            assert back == []
            served = [k for k in hot if await sim.client("n3").get(k) is not None]
            assert served == []

    simulate(scenario)


@pytest.mark.parametrize("seed", range(4))
def test_a_node_cut_off_alone_and_forgotten_brings_no_deleted_key_back(seed: int) -> None:
    # The cluster declares the node dead, forgets it and collects the tombstones of the keys
    # it held, before the node itself (its time-outs stretched by its own health score) has
    # even noticed it is alone.
    options = {**SEPARATION_OPTIONS, "gossip_interval": "30ms"}
    options["membership"] = {"dead_retention": "2s"}

    async def scenario() -> None:
        async with Simulation(seed=seed, options=options) as sim:
            await sim.start(5)
            await sim.wait_until(sim.converged, timeout=10)
            kv = sim.client("n0")
            table = sim.nodes["n0"].ensure_table()
            keys = [f"k{i}" for i in range(200)]
            for key in keys:
                await kv.set(key, b"old", consistency="all")
            hot = [k for k in keys if "n4" in table.owners(table.partition_of(k))]
            others = ["n0", "n1", "n2", "n3"]
            sim.partition(["n4"], others)
            await sim.wait_until(lambda: sim.all_see("n4", "dead", others), 5)
            for key in hot:
                await kv.delete(key, consistency="quorum")
            await sim.wait_until(lambda: "n4" not in sim.view("n0"), 30)
            await sim.wait_until(
                lambda: all(sim.nodes[n].storage.stats().tombstones == 0 for n in others), 10
            )
            sim.heal()
            await sim.wait_until(sim.converged, timeout=30)
            await sim.wait_until(lambda: held(sim, ["n4"], hot) == [], timeout=10)
            await sim.wait_until(lambda: in_agreement(sim), timeout=10)
            back = [k for k in hot if await kv.get(k, consistency="quorum") is not None]
            assert back == []

    simulate(scenario)
