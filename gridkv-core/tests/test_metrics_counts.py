"""The counters behind the membership and anti-entropy metrics: SWIM's suspicions, and the
keys anti-entropy finds differing (each round and in all), read as the instruments read them."""

from __future__ import annotations

import random
from typing import Any

from gridkv.cluster.membership.swim import ALIVE, SUSPECT, Swim, SwimConfig
from gridkv.node import Node
from gridkv.testing import Simulation, run_virtual
from gridkv.wire.messages import MemberRecord
from opentelemetry.metrics import CallbackOptions

CFG = SwimConfig(
    probe_interval=1.0,
    probe_timeout=0.2,
    failure_timeout=0.5,
    suspicion_min=1.0,
    suspicion_max_mult=3.0,
    indirect_checks=2,
    push_pull_interval=1000.0,
)
CODE: dict[str, int] = {ALIVE: 0, SUSPECT: 1}


def rec(node_id: str, inc: int, state: str, origin: str) -> MemberRecord:
    return MemberRecord(node_id, f"{node_id}:1", inc, CODE[state], origin)


def observed(node: Node, name: str, attribute: str) -> dict[str, Any]:
    """What the instrument ``name`` observes of ``node``, by the value of ``attribute``."""
    found = node.telemetry.observers()[name](CallbackOptions())
    return {str((o.attributes or {})[attribute]): o.value for o in found}


def test_swim_counts_the_suspicions_it_raises_and_hears_not_their_confirmations() -> None:
    a = Swim("a", "a:1", 1, CFG, random.Random("a"), 0.0)
    for node_id in ("b", "c", "d"):
        a.apply(0.0, rec(node_id, 1, ALIVE, "x"))
    a._order, a._order_pos = ["b", "c", "d"], 0
    a.tick(0.0)  # probes b, which never answers, nor do the relays
    a.tick(0.2)
    a.tick(0.5)
    assert a.state_of("b") == SUSPECT
    assert (a.suspicions_raised, a.suspicions_heard) == (1, 0)
    a.apply(0.6, rec("b", 1, SUSPECT, "c"))  # c confirms it: no new suspicion
    assert (a.suspicions_raised, a.suspicions_heard) == (1, 0)
    a.apply(0.6, rec("c", 1, SUSPECT, "d"))  # d suspects c
    a.apply(0.6, rec("c", 1, SUSPECT, "b"))  # and b confirms
    assert (a.suspicions_raised, a.suspicions_heard) == (1, 1)
    a.apply(0.7, rec("c", 2, SUSPECT, "d"))  # c again, at a newer incarnation: a new one
    assert (a.suspicions_raised, a.suspicions_heard) == (1, 2)
    a.apply(0.7, rec("e", 1, SUSPECT, "d"))  # a member first heard of as suspect
    assert (a.suspicions_raised, a.suspicions_heard) == (1, 3)
    a.apply(0.8, rec("a", 1, SUSPECT, "d"))  # about this node: refuted, not a suspicion
    assert (a.suspicions_raised, a.suspicions_heard, a.refutations) == (1, 3, 1)


def test_a_crashed_member_is_suspected_and_the_instrument_says_so() -> None:
    async def scenario() -> None:
        async with Simulation(seed=41) as sim:
            await sim.start(3)
            await sim.wait_until(sim.converged, timeout=10)
            for node in sim.live():
                assert observed(
                    node, "gridkv.membership.suspicions", "gridkv.suspicion.origin"
                ) == {
                    "local": 0,
                    "remote": 0,
                }
            await sim.crash("n2")
            await sim.wait_until(lambda: sim.all_see("n2", "dead"), timeout=30)
            for node in sim.live():
                counts = observed(node, "gridkv.membership.suspicions", "gridkv.suspicion.origin")
                swim = node.membership.swim  # type: ignore[attr-defined]
                assert counts == {"local": swim.suspicions_raised, "remote": swim.suspicions_heard}
                assert counts["local"] + counts["remote"] >= 1
            # Both survivors probe n2 at some point; at least one raised a suspicion itself.
            assert any(n.membership.swim.suspicions_raised for n in sim.live())  # type: ignore[attr-defined]

    run_virtual(scenario())


def test_anti_entropy_counts_the_keys_it_finds_differing_each_round_and_in_all() -> None:
    async def scenario() -> None:
        # Rounds only when the test runs one.
        options = {"replica_count": 2, "anti_entropy_interval": "1h"}
        async with Simulation(seed=42, options=options) as sim:
            await sim.start(2)
            await sim.wait_until(sim.converged, timeout=10)
            n0, n1 = sim.nodes["n0"], sim.nodes["n1"]

            def put(node: Node, key: str, value: bytes) -> None:  # no replication
                node.storage.apply(node.table.partition_of(key), node.new_entry(key, value, 0))

            for i in range(5):
                put(n0, f"only-n0-{i}", b"v")  # n1 lacks them: n0 sends them
            for i in range(3):
                put(n1, f"only-n1-{i}", b"v")  # n0 lacks them: n1 gives them
            for i in range(2):
                key = f"both-{i}"
                entry = n0.new_entry(key, b"old", 0)
                for node in (n0, n1):
                    node.storage.apply(node.table.partition_of(key), entry)
                newer = n0.new_entry(key, b"new", 0)  # one clock: surely newer
                assert n1.storage.apply(n1.table.partition_of(key), newer)  # n1 gives it
            keys = [f"only-n0-{i}" for i in range(5)] + [f"only-n1-{i}" for i in range(3)]
            partitions = {n0.table.partition_of(k) for k in [*keys, "both-0", "both-1"]}

            await n0.anti_entropy.round()  # n0 < n1: the round is n0's
            partitions_found, buckets_found, keys_found = n0.anti_entropy.last_round
            assert keys_found == 10
            assert partitions_found == len(partitions)
            assert partitions_found <= buckets_found <= 10
            assert n0.anti_entropy.keys_differing == 10
            assert observed(n0, "gridkv.antientropy.differences", "gridkv.scope") == {
                "partition": partitions_found,
                "bucket": buckets_found,
                "key": 10,
            }
            assert observed(n0, "gridkv.antientropy.last_round.differences", "gridkv.scope") == {
                "partition": partitions_found,
                "bucket": buckets_found,
                "key": 10,
            }
            await sim.wait_until(
                lambda: all(
                    n.storage.digest(p) == n0.storage.digest(p) for n in (n1,) for p in partitions
                ),
                timeout=5,
            )
            assert n0.anti_entropy.entries_received == 5  # 3 missing here, 2 newer there

            await n0.anti_entropy.round()  # repaired: nothing differs any more
            assert n0.anti_entropy.last_round == (0, 0, 0)
            assert n0.anti_entropy.keys_differing == 10  # the total stays
            assert observed(n0, "gridkv.antientropy.differences", "gridkv.scope")["key"] == 10
            assert observed(n0, "gridkv.antientropy.last_round.differences", "gridkv.scope") == {
                "partition": 0,
                "bucket": 0,
                "key": 0,
            }
            # n1 ran no round towards n0 (the pair's round is n0's): it counts nothing.
            assert n1.anti_entropy.keys_differing == 0

    run_virtual(scenario())
