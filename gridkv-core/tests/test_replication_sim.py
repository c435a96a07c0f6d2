"""Replication in simulated clusters: routing, batching, consistency levels, read repair."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from gridkv.base.errors import QuorumNotReached
from gridkv.storage import Entry, merge
from gridkv.testing import Simulation, run_virtual


def simulate(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run_virtual(scenario())


async def cluster(sim: Simulation, n: int) -> None:
    await sim.start(n)
    await sim.wait_until(sim.converged, timeout=10)


def replicas_of(sim: Simulation, key: str) -> tuple[str, ...]:
    node = sim.nodes["n0"]
    table = node.ensure_table()
    return table.owners(table.partition_of(key))


def stored(sim: Simulation, node_id: str, key: str) -> bytes | None:
    node = sim.nodes[node_id]
    return node.storage.get(node.table.partition_of(key), key)


def test_a_write_at_any_node_is_readable_at_every_node() -> None:
    async def scenario() -> None:
        async with Simulation(seed=21) as sim:
            await cluster(sim, 5)
            for i in range(50):
                writer = sim.client(f"n{i % 5}")
                await writer.set(f"key:{i}", f"value {i}".encode())

            def on_its_replicas_only() -> bool:
                return all(
                    sorted(
                        n for n in sim.nodes if stored(sim, n, f"key:{i}") == f"value {i}".encode()
                    )
                    == sorted(replicas_of(sim, f"key:{i}"))
                    for i in range(50)
                )

            await sim.wait_until(on_its_replicas_only, timeout=5)
            for node_id in sim.nodes:
                reader = sim.client(node_id)
                for i in range(50):
                    assert await reader.get(f"key:{i}") == f"value {i}".encode()

    simulate(scenario)


def test_writes_replicate_in_batches() -> None:
    async def scenario() -> None:
        async with Simulation(seed=22, options={"batch_threshold": 50}) as sim:
            await cluster(sim, 3)
            kv = sim.client("n0")
            for i in range(1000):
                await kv.set(f"k{i}", b"v")
            await sim.wait_until(
                lambda: all(
                    stored(sim, n, f"k{i}") == b"v" for n in sim.nodes for i in range(1000)
                ),
                timeout=5,
            )
            coordinator = sim.nodes["n0"].coordinator
            assert coordinator.entries_replicated == 2000  # 3 nodes, replica_count 3
            # 1000 entries for each of two peers, at most 50 a batch (and a few cut short
            # by the batch window).
            assert 2000 / 50 <= coordinator.batches_sent <= 2000 / 50 + 4

    simulate(scenario)


def test_quorum_survives_one_replica_down_and_fails_with_two_down() -> None:
    async def scenario() -> None:
        async with Simulation(seed=23) as sim:
            await cluster(sim, 5)
            key = "quorum-key"
            owners = replicas_of(sim, key)
            coordinator = next(n for n in sim.nodes if n not in owners)
            kv = sim.client(coordinator)
            await sim.crash(owners[0])
            await kv.set(key, b"v1", consistency="quorum")
            assert await kv.get(key, consistency="quorum") == b"v1"
            await sim.crash(owners[1])
            with pytest.raises(QuorumNotReached, match="stored by 1 of 2"):
                await kv.set(key, b"v2", consistency="quorum")
            with pytest.raises(QuorumNotReached):
                await kv.get(key, consistency="quorum")
            # The failed write is not undone: the one replica left stored it.
            assert stored(sim, owners[2], key) == b"v2"
            assert await kv.get(key) == b"v2"

    simulate(scenario)


def test_all_needs_every_replica() -> None:
    async def scenario() -> None:
        async with Simulation(seed=24) as sim:
            await cluster(sim, 4)
            key = "all-key"
            owners = replicas_of(sim, key)
            kv = sim.client(owners[0])
            await kv.set(key, b"v", consistency="all")
            assert all(stored(sim, n, key) == b"v" for n in owners)
            await sim.crash(owners[2])
            with pytest.raises(QuorumNotReached, match="stored by 2 of 3"):
                await kv.set(key, b"w", consistency="all")

    simulate(scenario)


def test_deletes_stay_deleted_everywhere() -> None:
    async def scenario() -> None:
        async with Simulation(seed=25) as sim:
            await cluster(sim, 4)
            await sim.client("n1").set("gone", b"v", consistency="all")
            await sim.client("n2").delete("gone", consistency="all")
            for node_id in sim.nodes:
                assert await sim.client(node_id).get("gone") is None
                assert await sim.client(node_id).get("gone", consistency="all") is None

    simulate(scenario)


def test_a_quorum_read_returns_the_freshest_version_and_repairs_the_stale_replica() -> None:
    async def scenario() -> None:
        async with Simulation(seed=26) as sim:
            await cluster(sim, 3)
            key = "repair-me"
            kv = sim.client("n0")
            await kv.set(key, b"old", consistency="all")
            stale = "n2"
            sim.partition([stale], ["n0", "n1"])
            await kv.set(key, b"new", consistency="quorum")
            assert stored(sim, stale, key) == b"old"
            sim.heal()
            assert await sim.client(stale).get(key, consistency="all") == b"new"
            await sim.wait_until(lambda: stored(sim, stale, key) == b"new", timeout=1)
            assert sim.nodes[stale].coordinator.repairs_sent == 1  # of its own stale copy

    simulate(scenario)


def test_a_non_owner_write_at_one_waits_for_a_replica() -> None:
    async def scenario() -> None:
        async with Simulation(seed=27) as sim:
            await cluster(sim, 5)
            key = "elsewhere"
            owners = replicas_of(sim, key)
            outsider = next(n for n in sim.nodes if n not in owners)
            await sim.client(outsider).set(key, b"v")
            assert stored(sim, outsider, key) is None
            assert any(stored(sim, n, key) == b"v" for n in owners)
            for owner in owners:
                await sim.crash(owner)
            with pytest.raises(QuorumNotReached, match="stored by 0 of 1"):
                await sim.client(outsider).set(key, b"w")

    simulate(scenario)


def test_a_graceful_close_sends_what_is_queued() -> None:
    async def scenario() -> None:
        async with Simulation(seed=28, options={"batch_window": "10s"}) as sim:
            await cluster(sim, 3)
            kv = sim.client("n0")
            for i in range(20):
                await kv.set(f"q{i}", b"v")
            assert stored(sim, "n1", "q0") is None
            await sim.leave("n0")
            assert all(stored(sim, n, f"q{i}") == b"v" for n in ("n1", "n2") for i in range(20))

    simulate(scenario)


def test_a_partition_with_writes_on_both_sides_heals_to_identical_replicas() -> None:
    async def scenario() -> None:
        async with Simulation(seed=29) as sim:
            await cluster(sim, 3)
            left, right = ["n0", "n1"], ["n2"]
            for i in range(30):
                await sim.client("n0").set(f"k{i}", b"before", consistency="all")
            sim.partition(left, right)
            for i in range(30):
                await sim.client("n0").set(f"k{i}", b"left")
                if i % 2:
                    await sim.client("n2").set(f"k{i}", b"right")
                if i % 5 == 0:
                    await sim.client("n2").delete(f"k{i}")

            def entry_at(node_id: str, key: str) -> Entry | None:
                node = sim.nodes[node_id]
                return node.storage.get_entry(node.table.partition_of(key), key)

            await sim.wait_until(
                lambda: all(entry_at("n1", f"k{i}") == entry_at("n0", f"k{i}") for i in range(30)),
                timeout=1,
            )
            expected = {
                f"k{i}": merge(entry_at("n0", f"k{i}"), entry_at("n2", f"k{i}")) for i in range(30)
            }
            # Writes made on both sides win somewhere, so anti-entropy must carry both ways.
            assert {e.writer for e in expected.values() if e is not None} == {"n0", "n2"}
            sim.heal()
            interval = sim.nodes["n0"].options.anti_entropy_interval

            def identical() -> bool:
                parts = range(sim.nodes["n0"].options.partition_count)
                return all(
                    len({sim.nodes[n].storage.digest(p) for n in sim.nodes}) == 1 for p in parts
                )

            await sim.wait_until(identical, timeout=20 * interval)
            for key, winner in expected.items():
                assert winner is not None
                for node_id in sim.nodes:
                    got = entry_at(node_id, key)
                    # The expiry may differ: a tombstone's is raised to its arrival time.
                    assert got is not None
                    assert (got.key, got.value, got.version, got.writer) == (
                        winner.key,
                        winner.value,
                        winner.version,
                        winner.writer,
                    )
            # What it repaired is counted, in entries and in bytes, both ways.
            drivers = [sim.nodes[n].anti_entropy for n in sim.nodes]
            received = sum(d.entries_received for d in drivers)
            assert received > 0
            assert sum(d.bytes_received for d in drivers) >= received * len(b"right")
            assert sum(d.bytes_sent for d in drivers) > 0

    simulate(scenario)


def test_anti_entropy_never_brings_a_delete_back() -> None:
    async def scenario() -> None:
        async with Simulation(seed=30) as sim:
            await cluster(sim, 3)
            await sim.client("n0").set("k", b"v", consistency="all")
            sim.partition(["n2"], ["n0", "n1"])
            await sim.client("n0").delete("k", consistency="quorum")
            sim.heal()

            def tombstone_everywhere() -> bool:
                entries = [n.storage.get_entry(n.table.partition_of("k"), "k") for n in sim.live()]
                return all(e is not None and e.tombstone for e in entries)

            # Once every replica holds the tombstone, the old value is nowhere to come back from.
            interval = sim.nodes["n0"].options.anti_entropy_interval
            await sim.wait_until(tombstone_everywhere, timeout=5 * interval)
            for node_id in sim.nodes:
                assert await sim.client(node_id).get("k", consistency="all") is None
                entry = sim.nodes[node_id].storage.get_entry(
                    sim.nodes[node_id].table.partition_of("k"), "k"
                )
                assert entry is not None and entry.tombstone

    simulate(scenario)


@pytest.mark.parametrize("near", [False, True], ids=["hot-ttl-only", "near-cache"])
def test_a_non_owner_caches_hot_reads_and_its_own_writes_invalidate_them(near: bool) -> None:
    async def scenario() -> None:
        options = {"hot_read_cache_ttl": "1s", "near_cache_ttl": "30s" if near else "0s"}
        async with Simulation(seed=31, options=options) as sim:
            await cluster(sim, 5)
            key = "hot"
            owners = replicas_of(sim, key)
            outsider = next(n for n in sim.nodes if n not in owners)
            kv = sim.client(outsider)
            await sim.client(owners[0]).set(key, b"v1", consistency="all")
            assert await kv.get(key) == b"v1"
            sent = sim.nodes[outsider].transport.stats().requests_sent
            for _ in range(100):
                assert await kv.get(key) == b"v1"
            assert sim.nodes[outsider].transport.stats().requests_sent == sent
            assert sim.nodes[outsider].coordinator.hot.hits == 100
            await kv.set(key, b"mine")  # a write through this node invalidates
            assert await kv.get(key) == b"mine"
            await sim.client(owners[0]).set(key, b"theirs", consistency="all")
            if near:  # the replica that answered tells this node: well before 1 s
                await sim.run_for(0.05)
                assert await kv.get(key) == b"theirs"
                return
            assert await kv.get(key) == b"mine"  # still cached
            await sim.run_for(1.1)  # the time is the point: past hot_read_cache_ttl
            assert await kv.get(key) == b"theirs"  # aged out

    simulate(scenario)


def test_the_hot_cache_is_bounded() -> None:
    async def scenario() -> None:
        async with Simulation(seed=32, options={"hot_cache_size": 10}) as sim:
            await cluster(sim, 5)
            outsider = sim.client("n4")
            for i in range(200):
                await outsider.get(f"miss:{i}")  # each "not found" is cached, up to the bound
            assert len(sim.nodes["n4"].coordinator.hot) == 10

    simulate(scenario)


def test_a_joining_node_receives_its_partitions_with_no_read_misses_meanwhile() -> None:
    async def scenario() -> None:
        async with Simulation(seed=33) as sim:
            await cluster(sim, 3)
            keys = [f"key:{i:06d}" for i in range(100_000)]
            writer = sim.client("n0")
            for key in keys:
                await writer.set(key, b"v")
            coordinator = sim.nodes["n0"].coordinator
            await sim.wait_until(lambda: coordinator.entries_replicated == 2 * len(keys), 5)
            sample = keys[::499]
            joiner = await sim.add("n3", seeds=[sim.address_of("n0")])
            misses = 0
            start = sim.now()
            while sim.now() - start < 5:
                for node_id in sim.nodes:
                    if not sim.nodes[node_id].clock_synced:
                        continue  # a node still joining refuses reads (NotReady)
                    kv = sim.client(node_id)
                    for key in sample:
                        if await kv.get(key) is None:
                            misses += 1
                await sim.run_for(0.05)  # reads every 50 ms through the join: time is the point
            assert misses == 0
            table = joiner.ensure_table()
            mine = [k for k in keys if "n3" in table.owners(table.partition_of(k))]
            assert mine
            assert all(stored(sim, "n3", k) == b"v" for k in mine)
            # With 3 nodes and replica_count 3 each held every key; with 4, each key n3 holds
            # now was given away by exactly one of them.
            dropped = sum(sim.nodes[n].handoff.entries_dropped for n in ("n0", "n1", "n2"))
            assert dropped == len(mine)
            for node_id in ("n0", "n1", "n2"):
                node = sim.nodes[node_id]
                for p in range(node.options.partition_count):
                    if node_id not in table.owners(p):
                        assert list(node.storage.entries(p)) == []

    simulate(scenario)


def test_a_gracefully_closed_node_loses_nothing_written_at_one() -> None:
    async def scenario() -> None:
        async with Simulation(seed=34) as sim:
            await cluster(sim, 4)
            kv = sim.client("n1")
            for i in range(2000):
                await kv.set(f"k{i}", f"v{i}".encode())
            await sim.leave("n1")
            await sim.wait_until(lambda: sim.all_see("n1", "left"), timeout=5)

            def on_every_replica() -> bool:
                return all(
                    stored(sim, n, f"k{i}") == f"v{i}".encode()
                    for i in range(0, 2000, 7)
                    for n in replicas_of(sim, f"k{i}")
                )

            await sim.wait_until(on_every_replica, timeout=5)
            for node_id in ("n0", "n2", "n3"):
                reader = sim.client(node_id)
                for i in range(0, 2000, 7):
                    assert await reader.get(f"k{i}", consistency="quorum") == f"v{i}".encode()

    simulate(scenario)


def test_no_acknowledged_quorum_write_is_lost_while_fewer_than_replica_count_fail() -> None:
    async def scenario() -> None:
        async with Simulation(seed=35, options={"replica_count": 3}) as sim:
            await cluster(sim, 3)
            kv = sim.client("n0")
            await sim.crash("n2")
            acked = []
            for i in range(300):
                key = f"w{i}"
                await kv.set(key, b"v", consistency="quorum")
                acked.append(key)
            await sim.crash("n1")  # two of three replicas have failed now
            survivor = sim.client("n0")
            for key in acked:
                assert await survivor.get(key) == b"v"

    simulate(scenario)


def test_a_graceful_close_hands_off_even_with_a_single_replica() -> None:
    async def scenario() -> None:
        async with Simulation(seed=36, options={"replica_count": 1}) as sim:
            await cluster(sim, 3)
            kv = sim.client("n1")
            keys = [f"solo{i}" for i in range(3000)]
            for key in keys:
                await kv.set(key, b"v")
            held_by_n1 = [k for k in keys if replicas_of(sim, k) == ("n1",)]
            assert held_by_n1
            await sim.leave("n1")
            await sim.wait_until(lambda: sim.all_see("n1", "left"), timeout=5)
            for node_id in ("n0", "n2"):
                reader = sim.client(node_id)
                for key in held_by_n1[::13]:
                    assert await reader.get(key) == b"v"

    simulate(scenario)


def test_get_many_answers_at_once_when_a_single_replica_died() -> None:
    # Found by a review: with replica_count 1, the dead owner's partitions move to the
    # others, and until the handoff gave up on it (handoff_timeout) get_many reported "no
    # replica in the view" for them, while get waited a read_timeout on the dead node.
    async def scenario() -> None:
        async with Simulation(seed=41, options={"replica_count": 1}) as sim:
            await cluster(sim, 3)
            keys = [f"k{i}" for i in range(60)]
            kv = sim.client("n0")
            assert await kv.set_many({k: b"v" for k in keys}) == {}
            lost = [k for k in keys if "n2" in replicas_of(sim, k)]
            await sim.crash("n2")
            await sim.wait_until(
                lambda: sim.nodes["n0"].membership.state_of("n2") == "dead", timeout=10
            )
            loop = asyncio.get_running_loop()
            started = loop.time()
            found = await kv.get_many(keys)  # the lost keys are missing, not errors
            assert sorted(found) == sorted(k for k in keys if k not in lost)
            assert await kv.get(lost[0]) is None
            assert loop.time() - started < sim.nodes["n0"].options.read_timeout

    simulate(scenario)
