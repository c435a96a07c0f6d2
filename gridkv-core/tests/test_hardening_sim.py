"""The core under real data and real failures, in simulated clusters.

Big values and big partitions converge; an acknowledgement means stored; handoff loses no
write; a restarted node's writes order after its earlier ones; the hot cache and TTLs follow
the node's clock and its own writes; a hostile peer cannot flood the view or push data while
held dead.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from gridkv import hookimpl
from gridkv.base.errors import GridKVError, QuorumNotReached
from gridkv.base.hlc import HLC
from gridkv.cluster.membership.swim import NEW_MEMBERS_PER_MESSAGE
from gridkv.node import Node
from gridkv.storage.base import Entry
from gridkv.testing import Simulation, run_virtual
from gridkv.wire.messages import (
    NOT_REPLICA,
    STORED,
    WRONG_PARTITION,
    BatchAck,
    MemberRecord,
    PushPull,
    ReplicateBatch,
)


def simulate(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run_virtual(scenario())


async def cluster(sim: Simulation, n: int) -> None:
    await sim.start(n)
    await sim.wait_until(sim.converged, timeout=10)


def partition_of(sim: Simulation, key: str) -> int:
    return sim.live()[0].ensure_table().partition_of(key)


def owners_of(sim: Simulation, key: str) -> tuple[str, ...]:
    table = sim.live()[0].ensure_table()
    return table.owners(table.partition_of(key))


def stored(sim: Simulation, node_id: str, key: str) -> bytes | None:
    return sim.nodes[node_id].storage.get(partition_of(sim, key), key)


def test_incompressible_values_larger_than_a_quarter_frame_reach_every_replica() -> None:
    # 204 values of 100 KB in 4 partitions with 256 KiB frames: a batch of batch_threshold
    # entries would be 10 MB; each value must travel alone, and anti-entropy must carry them
    # to a replica that missed them.
    options = {
        "partition_count": 4,
        "max_value_bytes": 120_000,
        "network": {"max_frame_bytes": 256 * 1024},
        "storage": {"max_memory_mb": 256},
    }

    async def scenario() -> None:
        async with Simulation(seed=101, options=options) as sim:
            await cluster(sim, 3)
            rng = random.Random(101)
            values = {f"big{i}": rng.randbytes(100_000) for i in range(204)}
            sim.partition(["n2"], ["n0", "n1"])
            kv = sim.client("n0")
            for key, value in list(values.items())[:102]:
                await kv.set(key, value)
            sim.heal()
            for key, value in list(values.items())[102:]:
                await kv.set(key, value)

            def everywhere() -> bool:
                return all(stored(sim, n, k) == v for n in sim.nodes for k, v in values.items())

            await sim.wait_until(everywhere, timeout=30)

    simulate(scenario)


def test_a_partition_larger_than_a_message_is_compared_in_pages() -> None:
    options = {
        "partition_count": 1,
        "max_value_bytes": 32 * 1024,
        "network": {"max_frame_bytes": 64 * 1024},
    }

    async def scenario() -> None:
        async with Simulation(seed=102, options=options) as sim:
            await cluster(sim, 2)
            sim.partition(["n1"], ["n0"])
            kv = sim.client("n0")
            for i in range(20_000):
                await kv.set(f"key:{i:05d}", b"v" * 100)
            sim.heal()
            await sim.wait_until(lambda: sim.nodes["n1"].storage.partition_size(0) == 20_000, 60)
            assert sim.nodes["n0"].storage.digest(0) == sim.nodes["n1"].storage.digest(0)

    simulate(scenario)


def test_replicas_refuse_versions_too_far_ahead_and_quorum_counts_only_stores() -> None:
    async def scenario() -> None:
        async with Simulation(seed=103) as sim:
            await cluster(sim, 5)
            key = "drift"
            outsider = next(n for n in sim.nodes if n not in owners_of(sim, key))
            node = sim.nodes[outsider]
            # The coordinator's clock runs a minute ahead: more than max_clock_drift (10 s).
            wall = node._clock
            node.hlc = HLC(lambda: wall() + 60, node.options.max_clock_drift)
            with pytest.raises(QuorumNotReached, match="too far ahead"):
                await sim.client(outsider).set(key, b"from the future", consistency="quorum")
            assert all(stored(sim, n, key) is None for n in sim.nodes)

    simulate(scenario)


def test_entries_for_a_partition_the_receiver_does_not_replicate_or_misfiled_are_refused() -> None:
    async def scenario() -> None:
        async with Simulation(seed=104) as sim:
            await cluster(sim, 5)
            sender = sim.nodes["n0"]
            key = "misrouted"
            partition = partition_of(sim, key)
            outsider = next(n for n in sim.nodes if n not in owners_of(sim, key))
            owner = owners_of(sim, key)[0]
            entry = Entry(key, b"v", sender.hlc.now(), "n0")
            wrong = (partition + 1) % sender.options.partition_count
            for target, part, code in (
                (outsider, partition, NOT_REPLICA),
                (owner, wrong, WRONG_PARTITION),  # whether or not it replicates `wrong`
                (owner, partition, STORED),
            ):
                reply = await sender.messaging.request(
                    sim.address_of(target), ReplicateBatch("n0", [(part, entry)])
                )
                assert isinstance(reply, BatchAck)
                assert reply.results == bytes([code])
            assert stored(sim, outsider, key) is None
            assert stored(sim, owner, key) == b"v"

    simulate(scenario)


def owners_of_p(sim: Simulation, partition: int) -> tuple[str, ...]:
    return sim.live()[0].ensure_table().owners(partition)


def test_a_write_that_reaches_a_former_replica_is_refused_not_acknowledged_and_stranded() -> None:
    # A coordinator whose view is a moment behind sends a write to a node that has just lost
    # the partition and is handing it over. That node must not acknowledge it and then drop it
    # with the partition.
    async def scenario() -> None:
        async with Simulation(seed=114, delay=(0.005, 0.005)) as sim:
            await cluster(sim, 3)
            writer = sim.client("n0")
            for i in range(100_000):
                await writer.set(f"k{i}", b"v")
            replicated = sim.nodes["n0"].coordinator
            await sim.wait_until(lambda: replicated.entries_replicated == 2 * 100_000, timeout=5)
            before = {p: owners_of_p(sim, p) for p in range(64)}
            await sim.add("n3")
            await sim.wait_until(sim.converged, timeout=10)
            after = {p: owners_of_p(sim, p) for p in range(64)}
            moved = [(p, g) for p in range(64) for g in before[p] if g not in after[p]]
            assert moved
            partition, giver = moved[-1]
            handoff = sim.nodes[giver].handoff

            def handing_over() -> bool:
                return handoff._running is not None and not handoff._running.done()

            await sim.wait_until(handing_over, timeout=5, step=0.001)
            key = next(
                f"late{i}" for i in range(10_000) if partition_of(sim, f"late{i}") == partition
            )
            entry = Entry(key, b"late", sim.nodes["n0"].hlc.now(), "stale-coordinator")
            reply = await sim.nodes["n0"].messaging.request(
                sim.address_of(giver), ReplicateBatch("n0", [(partition, entry)])
            )
            assert isinstance(reply, BatchAck)
            await sim.wait_until(lambda: not handing_over(), timeout=30)
            if reply.stored:  # then the cluster must have it where readers look
                await sim.wait_until(
                    lambda: sum(stored(sim, n, key) == b"late" for n in owners_of(sim, key)) >= 2,
                    timeout=5,
                )
                assert await sim.client("n0").get(key, consistency="quorum") == b"late"
            else:
                assert reply.results == bytes([NOT_REPLICA])

    simulate(scenario)


def test_a_write_that_lands_on_a_giver_during_its_handoff_is_given_in_a_later_pass() -> None:
    async def scenario() -> None:
        async with Simulation(seed=115) as sim:
            await cluster(sim, 3)
            writer = sim.client("n0")
            for i in range(3000):
                await writer.set(f"k{i}", b"v")
            before = {p: owners_of_p(sim, p) for p in range(64)}
            giver_id = "n1"
            giver = sim.nodes[giver_id]
            original = giver.coordinator.send_batch
            landed: list[Entry] = []

            async def send_batch(address: str, entries: list[tuple[int, Entry]]) -> bytes:
                if not landed:  # a local write lands while the first batch is on its way
                    partition, first = entries[0]
                    late = Entry(first.key, b"landed meanwhile", giver.hlc.now(), giver_id)
                    giver.storage.apply(partition, late)
                    landed.append(late)
                return await original(address, entries)

            giver.coordinator.send_batch = send_batch  # type: ignore[method-assign]
            await sim.add("n3")
            await sim.wait_until(sim.converged, timeout=10)
            moved = [p for p in range(64) if giver_id in before[p]]
            await sim.wait_until(lambda: giver.handoff.pending == 0 and landed != [], timeout=20)
            key = landed[0].key
            assert await sim.client("n0").get(key, consistency="all") == b"landed meanwhile"
            table = giver.ensure_table()
            for p in moved:
                if giver_id not in table.owners(p):
                    assert giver.storage.partition_size(p) == 0

    simulate(scenario)


def test_quorum_writes_through_joins_and_leaves_are_never_lost() -> None:
    async def scenario() -> None:
        async with Simulation(seed=105, options={"handoff_timeout": "5s"}) as sim:
            await cluster(sim, 3)
            acked: list[str] = []
            stop = asyncio.Event()

            async def writer(w: int) -> None:
                rng = random.Random(w)
                i = 0
                while not stop.is_set():
                    key = f"w{w}-{i}"
                    i += 1
                    node_id = rng.choice(sorted(n.node_id for n in sim.live()))
                    try:
                        await sim.client(node_id).set(key, key.encode(), consistency="quorum")
                    except GridKVError:
                        continue
                    acked.append(key)

            writers = [asyncio.create_task(writer(w)) for w in range(4)]
            # The churn schedule: the writers go on through each join and leave.
            await sim.run_for(1)
            await sim.add("n3")
            await sim.run_for(2)
            await sim.add("n4")
            await sim.run_for(2)
            await sim.leave("n1")
            await sim.run_for(2)
            await sim.add("n5")
            await sim.run_for(1)
            await sim.leave("n3")
            await sim.run_for(2)
            stop.set()
            await asyncio.gather(*writers)
            assert len(acked) > 1000
            await sim.wait_until(
                lambda: sim.converged() and all(n.handoff.pending == 0 for n in sim.live()),
                timeout=10,
            )
            reader = sim.client("n0")
            lost = [k for k in acked if await reader.get(k, consistency="quorum") != k.encode()]
            assert lost == []

    simulate(scenario)


def test_a_restarted_node_writes_after_what_it_wrote_before() -> None:
    async def scenario() -> None:
        async with Simulation(seed=106) as sim:
            await cluster(sim, 3)
            key = "mine"
            node = sim.nodes["n1"]
            # A peer's clock ran 5 s ahead (within max_clock_drift): n1 adopted it.
            node.hlc.update(((int(node._clock() * 1000) + 5000) << 16) + 1)
            await sim.client("n1").set(key, b"before the restart", consistency="all")
            await sim.crash("n1")
            await sim.wait_until(lambda: sim.all_see("n1", "dead"), timeout=10)
            restarted = await sim.restart("n1")
            await sim.client("n1").wait_ready(10)
            assert restarted.clock_synced
            await sim.client("n1").set(key, b"after the restart", consistency="all")
            for node_id in sim.nodes:
                assert await sim.client(node_id).get(key, consistency="all") == (
                    b"after the restart"
                )

    simulate(scenario)


def test_a_read_in_flight_does_not_put_an_older_answer_back_in_the_hot_cache() -> None:
    async def scenario() -> None:
        async with Simulation(seed=107, delay=(0.01, 0.01)) as sim:
            await cluster(sim, 5)
            key = "hot"
            owners = owners_of(sim, key)
            outsider = next(n for n in sim.nodes if n not in owners)
            await sim.client(owners[0]).set(key, b"old", consistency="all")
            kv = sim.client(outsider)
            reading = asyncio.create_task(kv.get(key))
            await asyncio.sleep(0.005)  # the read's request is on its way to a replica
            await kv.set(key, b"new", consistency="all")
            assert await reading in (b"old", b"new")
            assert await kv.get(key) == b"new"

    simulate(scenario)


def test_ttls_follow_the_nodes_clock() -> None:
    async def scenario() -> None:
        async with Simulation(seed=108) as sim:
            await cluster(sim, 3)
            kv = sim.client("n0")
            await kv.set("short", b"v", ttl=5, consistency="all")
            # The time is the point: the value lives for its 5 s of the nodes' clock, no less
            # and no more.
            await sim.run_for(4.5)
            assert await kv.get("short") == b"v"
            assert await sim.client("n2").get("short", consistency="all") == b"v"
            await sim.run_for(1)
            assert await kv.get("short") is None
            assert await sim.client("n2").get("short", consistency="all") is None

    simulate(scenario)


def test_a_flood_of_made_up_members_in_one_push_pull_is_bounded_and_cleared_in_seconds() -> None:
    async def scenario() -> None:
        async with Simulation(seed=109) as sim:
            await cluster(sim, 3)
            fakes = [
                MemberRecord(f"fake-{i}", f"fake-{i}:1", 1, 0, f"fake-{i}") for i in range(1000)
            ]
            attacker = sim.nodes["n0"]
            await attacker.messaging.request(
                sim.address_of("n1"), PushPull("attacker", "attacker:1", False, fakes)
            )
            assert len([m for m in sim.view("n1") if m.startswith("fake-")]) == (
                NEW_MEMBERS_PER_MESSAGE
            )

            def no_fake_alive() -> bool:
                return not any(
                    member.startswith("fake-") and state in ("alive", "suspect")
                    for node_id in sim.nodes
                    for member, state in sim.view(node_id).items()
                )

            took = await sim.wait_until(no_fake_alive, timeout=30)
            assert took < 10  # 1,000 fakes took minutes to clear
            for i in range(50):
                await sim.client("n1").set(f"q{i}", b"v", consistency="quorum")

    simulate(scenario)


def test_data_from_a_member_held_dead_is_refused_until_it_rejoins() -> None:
    async def scenario() -> None:
        async with Simulation(seed=110) as sim:
            await cluster(sim, 3)
            sim.partition(["n2"], ["n0", "n1"])
            await sim.wait_until(lambda: sim.all_see("n2", "dead", ["n0", "n1"]), timeout=10)
            n2 = sim.nodes["n2"]
            entry = Entry("stale", b"v", n2.hlc.now(), "n2")
            partition = partition_of(sim, "stale")
            assert "n0" in owners_of(sim, "stale")
            sim.heal()
            with pytest.raises(GridKVError, match="holds 'n2' dead"):
                await n2.messaging.request(
                    sim.address_of("n0"), ReplicateBatch("n2", [(partition, entry)])
                )
            assert stored(sim, "n0", "stale") is None
            await sim.wait_until(lambda: sim.all_see("n2", "alive", ["n0", "n1"]), timeout=10)
            reply = await n2.messaging.request(
                sim.address_of("n0"), ReplicateBatch("n2", [(partition, entry)])
            )
            assert isinstance(reply, BatchAck)
            assert reply.results == bytes([STORED])
            assert stored(sim, "n0", "stale") == b"v"

    simulate(scenario)


def test_moving_partitions_are_safe_to_read_while_other_threads_rebuild_the_table() -> None:
    async def scenario() -> None:
        async with Simulation(seed=111) as sim:
            await cluster(sim, 3)
            node: Node = sim.nodes["n0"]
            table = node.ensure_table()
            errors: list[BaseException] = []
            done = threading.Event()

            def churn() -> None:
                try:
                    while not done.is_set():
                        node.handoff.table_changed(table, table)
                        node.refresh_local_reads()
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=churn) for _ in range(3)]
            for thread in threads:
                thread.start()
            for _ in range(2000):
                node.handoff.waiting_on(random.randrange(node.options.partition_count))
                node.refresh_local_reads()
            done.set()
            for thread in threads:
                thread.join()
            assert errors == []

    simulate(scenario)


def test_a_node_the_cluster_forgot_drops_what_it_held_before_the_separation() -> None:
    options = {
        "membership": {"dead_retention": "5s"},
        "tombstone_ttl": "1s",
        "handoff_timeout": "1s",
        "storage": {"expiry_interval": "200ms"},
    }

    async def scenario() -> None:
        async with Simulation(seed=112, options=options) as sim:
            await cluster(sim, 3)
            await sim.client("n0").set("old", b"v", consistency="all")
            sim.partition(["n2"], ["n0", "n1"])
            await sim.client("n0").delete("old", consistency="quorum")
            majority = ("n0", "n1")

            def forgotten() -> bool:  # each side forgot the other; the tombstones are gone
                return (
                    all("n2" not in sim.view(n) for n in majority)
                    and all(n not in sim.view("n2") for n in majority)
                    and all(sim.nodes[n].storage.stats().tombstones == 0 for n in majority)
                )

            await sim.wait_until(forgotten, timeout=30)
            collected = [sim.nodes[n].storage.stats().tombstones_collected for n in majority]
            assert collected == [1, 1]  # the delete's tombstone, on each of the two
            await sim.client("n2").set("during", b"w")  # written on n2 alone, since
            sim.heal()
            await sim.wait_until(lambda: sim.converged(), timeout=30)
            assert stored(sim, "n2", "old") is None
            assert stored(sim, "n2", "during") == b"w"
            # Data flows between the sides again: n2's write reaches the others...
            await sim.wait_until(
                lambda: all(stored(sim, n, "during") == b"w" for n in sim.nodes), timeout=10
            )
            # ...and the value deleted while n2 was away does not come back with it.
            for node_id in sim.nodes:
                assert await sim.client(node_id).get("old", consistency="all") is None

    simulate(scenario)


def test_nothing_but_gridkv_errors_reach_a_caller_during_faults() -> None:
    async def scenario() -> None:
        async with Simulation(seed=113, loss=0.05) as sim:
            await cluster(sim, 5)
            rng = random.Random(113)
            answered = 0
            for round_ in range(20):
                victim = rng.choice(sorted(sim.nodes))
                sim.partition([victim], [n for n in sim.nodes if n != victim])
                calls: list[Coroutine[Any, Any, bytes | None]] = []
                for i in range(20):
                    kv = sim.client(rng.choice(sorted(sim.nodes)))
                    level = rng.choice(["one", "quorum", "all"])
                    calls.append(kv.set(f"f{round_}-{i}", b"v", consistency=level))
                    calls.append(kv.get(f"f{round_}-{i}", consistency=level))
                results = await asyncio.gather(*calls, return_exceptions=True)
                for result in results[0::2]:  # the sets
                    assert result is None or isinstance(result, GridKVError), result
                for result in results[1::2]:  # the gets, of the key just written or of none
                    assert result in (None, b"v") or isinstance(result, GridKVError), result
                answered += sum(not isinstance(r, GridKVError) for r in results)
                sim.heal()
                await sim.run_for(1)  # the fault schedule: a second of calm between faults
            # Errors are for the calls the faults did hit, not for most of them.
            assert answered > 20 * 40 / 2

    simulate(scenario)


def test_a_send_that_hangs_for_one_member_does_not_hold_up_probes_to_the_others() -> None:
    async def scenario() -> None:
        async with Simulation(seed=116) as sim:
            await cluster(sim, 5)
            node = sim.nodes["n0"]
            original = node.transport.send
            stuck = sim.address_of("n4")

            async def send(address: str, payload: bytes) -> None:
                if address == stuck:  # a dial to a peer that never answers
                    await asyncio.sleep(3600)
                await original(address, payload)

            node.transport.send = send  # type: ignore[method-assign]
            # Through the hook: Simulation.events records nothing today (see
            # test_membership_sim.py::test_the_simulation_records_every_view_change).
            declared: list[tuple[str, str]] = []

            class Deaths:
                @hookimpl
                def gridkv_member_changed(
                    self, node: Any, member: Any, old: str | None, new: str
                ) -> None:
                    if new == "dead":
                        declared.append((node.node_id, member.node_id))

            sim.plugins.register(Deaths(), name="deaths")
            await sim.run_for(10)  # the time is the point: ten seconds of probes go out
            assert [d for d in declared if d[1] != "n4"] == []
            assert {m: s for m, s in sim.view("n0").items() if m != "n4"} == dict.fromkeys(
                ("n0", "n1", "n2", "n3"), "alive"
            )

    simulate(scenario)
