"""Membership in whole simulated clusters: real nodes, memory transport, virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from gridkv import hookimpl
from gridkv.base.errors import NotReady
from gridkv.testing import Simulation, run_virtual


def simulate(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return run_virtual(scenario())


Change = tuple[float, str, str, str | None, str]


class ViewChanges:
    """Every change any node of a simulation makes to its view, as the public hook reports it:
    ``(time, observer, member, old state, new state)``.

    Kept apart from ``Simulation.events`` so the tests check the simulation's record against
    the hook (:func:`test_the_simulation_records_every_view_change`): that record once stayed
    empty and left every assertion on it, ``false_deaths()`` included, unable to fail.
    """

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self.events: list[Change] = []
        sim.plugins.register(self, name="view-changes")

    @hookimpl
    def gridkv_member_changed(self, node: Any, member: Any, old: str | None, new: str) -> None:
        self.events.append((self._sim.now(), node.node_id, member.node_id, old, new))


def deaths(events: list[Change], since: float = float("-inf")) -> list[tuple[float, str, str]]:
    """``(time, observer, member)`` of each member declared dead at or after ``since``."""
    return [(t, who, whom) for t, who, whom, _, new in events if new == "dead" and t >= since]


def test_a_crashed_node_is_declared_dead_by_every_member() -> None:
    async def scenario() -> float:
        async with Simulation(seed=1) as sim:
            changes = ViewChanges(sim)
            await sim.start(10)
            await sim.wait_until(sim.converged, timeout=10)
            crashed_at = sim.now()
            await sim.crash("n4")
            took = await sim.wait_until(lambda: sim.all_see("n4", "dead"), timeout=10)
            declared = deaths(changes.events)
            assert {whom for _, _, whom in declared} == {"n4"}
            assert min(t for t, _, _ in declared) >= crashed_at
            assert sorted(who for _, who, _ in declared) == [f"n{i}" for i in range(10) if i != 4]
            assert sim.converged()
            return took

    assert simulate(scenario) < 3.0


def test_no_live_member_is_declared_dead_under_ten_percent_loss() -> None:
    async def scenario() -> None:
        async with Simulation(seed=2, loss=0.10) as sim:
            changes = ViewChanges(sim)
            await sim.start(10)
            await sim.wait_until(sim.converged, timeout=20)
            await sim.run_for(120)  # a soak: the time under loss is the point
            assert deaths(changes.events) == []
            assert sim.converged()

    simulate(scenario)


def test_no_live_member_is_declared_dead_when_a_tenth_of_nodes_stall_300ms() -> None:
    async def scenario() -> None:
        async with Simulation(seed=3) as sim:
            changes = ViewChanges(sim)
            nodes = await sim.start(20)
            await sim.wait_until(sim.converged, timeout=20)
            ids = [n.node_id for n in nodes]
            for _ in range(200):
                for node_id in sim.rng.sample(ids, 2):
                    sim.stall(node_id, 0.3)
                await sim.run_for(0.6)  # the stall schedule: two nodes every 0.6 s
            await sim.wait_until(sim.converged, timeout=5)  # suspicions of the last stalls end
            assert deaths(changes.events) == []

    simulate(scenario)


def test_a_partition_splits_the_view_and_healing_merges_it() -> None:
    async def scenario() -> None:
        async with Simulation(seed=4) as sim:
            await sim.start(10)
            await sim.wait_until(sim.converged, timeout=10)
            left = [f"n{i}" for i in range(5)]
            right = [f"n{i}" for i in range(5, 10)]
            sim.partition(left, right)

            def split() -> bool:
                return all(sim.view(a)[b] == "dead" for a in left for b in right) and all(
                    sim.view(b)[a] == "dead" for a in left for b in right
                )

            await sim.wait_until(split, timeout=30)
            assert sim.converged(left)
            assert sim.converged(right)
            sim.heal()
            await sim.wait_until(sim.converged, timeout=60)

    simulate(scenario)


@pytest.mark.parametrize(
    "new_address", [None, "n3-moved:7946"], ids=["same-address", "new-address"]
)
def test_a_restarted_node_rejoins_within_a_few_probe_periods(new_address: str | None) -> None:
    async def scenario() -> None:
        async with Simulation(seed=5) as sim:
            changes = ViewChanges(sim)
            await sim.start(8)
            await sim.wait_until(sim.converged, timeout=10)
            await sim.crash("n3")
            await sim.wait_until(lambda: sim.all_see("n3", "dead"), timeout=10)
            restarted_at = sim.now()
            await sim.restart("n3", address=new_address)
            took = await sim.wait_until(sim.converged, timeout=10)
            assert took <= 10 * sim.nodes["n0"].options.gossip_interval
            assert all(sim.view(o)["n3"] == "alive" for o in sim.nodes if o != "n3")
            assert deaths(changes.events, since=restarted_at) == []
            if new_address:
                assert all(
                    m.address == new_address
                    for n in sim.live()
                    for m in n.membership.members()
                    if m.node_id == "n3"
                )

    simulate(scenario)


def test_a_restart_before_the_crash_is_detected_is_not_held_out_as_dead() -> None:
    async def scenario() -> None:
        async with Simulation(seed=6) as sim:
            await sim.start(8)
            await sim.wait_until(sim.converged, timeout=10)
            await sim.crash("n2")
            await sim.restart("n2")
            await sim.wait_until(sim.converged, timeout=10)
            await sim.run_for(5)  # the time is the point: it stays alive in every view
            assert sim.converged()

    simulate(scenario)


def test_a_hundred_node_join_storm_converges_to_one_view() -> None:
    async def scenario() -> float:
        async with Simulation(seed=7) as sim:
            changes = ViewChanges(sim)
            first = await sim.add("n0", seeds=[])
            seed = [first.transport.local_address]
            await asyncio.gather(*(sim.add(f"n{i}", seeds=seed) for i in range(1, 100)))
            took = await sim.wait_until(sim.converged, timeout=60, step=0.1)
            assert len(sim.live()) == 100
            assert deaths(changes.events) == []
            return took

    assert simulate(scenario) < 30


def test_a_graceful_close_is_seen_as_left_not_dead() -> None:
    async def scenario() -> None:
        async with Simulation(seed=8) as sim:
            changes = ViewChanges(sim)
            await sim.start(6)
            await sim.wait_until(sim.converged, timeout=10)
            await sim.leave("n5")
            await sim.wait_until(lambda: sim.all_see("n5", "left"), timeout=5)
            await sim.run_for(5)  # the time is the point: long past a failed probe's suspicion
            assert sim.all_see("n5", "left")
            for observer in ("n0", "n1", "n2", "n3", "n4"):  # joined, then left; never dead
                seen = [
                    (o, n)
                    for _, who, whom, o, n in changes.events
                    if (who, whom) == (observer, "n5")
                ]
                assert seen == [(None, "alive"), ("alive", "left")]

    simulate(scenario)


def test_the_same_seed_replays_the_same_history() -> None:
    async def scenario() -> list[Change]:
        async with Simulation(seed=9, loss=0.05) as sim:
            changes = ViewChanges(sim)
            await sim.start(8)
            await sim.run_for(3)  # fixed times: the same history at the same moments is the point
            await sim.crash("n6")
            await sim.run_for(5)
            return changes.events

    history = simulate(scenario)
    assert history == simulate(scenario)
    # A history worth comparing: every join, and the crash seen by the seven others.
    assert len([c for c in history if c[3] is None]) == 8 * 7
    assert sorted(who for _, who, whom in deaths(history) if whom == "n6") == [
        f"n{i}" for i in range(8) if i != 6
    ]


def test_ready_waits_for_the_join_and_stats_list_the_members() -> None:
    async def scenario() -> None:
        async with Simulation(seed=10) as sim:
            await sim.start(4)
            node = sim.nodes["n3"]
            await node.wait_ready(5)
            await sim.wait_until(sim.converged, timeout=10)
            stats = node.stats().cluster
            assert stats.ready
            assert stats.cluster_size == 4
            assert stats.healthy_nodes == 4
            assert stats.peer_count == 3
            assert stats.members[0].node_id == "n3"
            assert {m.node_id for m in stats.members} == {"n0", "n1", "n2", "n3"}
            assert all(m.state == "alive" for m in stats.members)

    simulate(scenario)


def test_unreachable_seeds_leave_the_node_not_ready_naming_them() -> None:
    async def scenario() -> None:
        async with Simulation(seed=11) as sim:
            node = await sim.add("lonely", seeds=["ghost-a:7946", "ghost-b:7946"])
            with pytest.raises(NotReady, match=r"ghost-a:7946: PeerUnavailable.*ghost-b:7946"):
                await node.wait_ready(3)
            await sim.run_for(node.options.startup_grace_period + 0.1)  # the grace period ends
            with pytest.raises(NotReady, match="no seed answered"):
                node.health_check()

    simulate(scenario)


def test_health_check_fails_when_every_peer_is_dead() -> None:
    async def scenario() -> None:
        async with Simulation(seed=12, options={"startup_grace_period": 0.5}) as sim:
            await sim.start(3)
            await sim.wait_until(sim.converged, timeout=10)
            sim.nodes["n2"].health_check()
            await sim.crash("n0")
            await sim.crash("n1")
            await sim.wait_until(
                lambda: sim.view("n2")["n0"] == "dead" and sim.view("n2")["n1"] == "dead",
                timeout=10,
            )
            with pytest.raises(NotReady, match="every other member is dead"):
                sim.nodes["n2"].health_check()

    simulate(scenario)


def test_member_changed_hook_fires_on_every_state_change() -> None:
    seen: list[tuple[str, str, str | None, str]] = []

    class Watcher:
        @hookimpl
        def gridkv_member_changed(self, node: Any, member: Any, old: str | None, new: str) -> None:
            seen.append((node.node_id, member.node_id, old, new))

    async def scenario() -> dict[str, dict[str, str]]:
        async with Simulation(seed=13) as sim:
            sim.plugins.register(Watcher(), name="watcher")
            await sim.start(3)
            await sim.wait_until(sim.converged, timeout=10)
            await sim.crash("n2")
            await sim.wait_until(lambda: sim.all_see("n2", "dead"), timeout=10)
            return {observer: sim.view(observer) for observer in ("n0", "n1")}

    views = simulate(scenario)
    # No change left out: each one starts from the state the one before it ended in, and the
    # last one is the state in the view.
    for observer, view in views.items():
        for member in ("n0", "n1", "n2"):
            if member == observer:
                continue
            changes = [
                (old, new) for who, whom, old, new in seen if (who, whom) == (observer, member)
            ]
            assert [old for old, _ in changes] == [None] + [new for _, new in changes[:-1]]
            assert changes[-1][1] == view[member]
    final = {"n0": "alive", "n1": "alive", "n2": "dead"}
    assert views == {"n0": final, "n1": final}


def test_the_simulation_records_every_view_change() -> None:
    async def scenario() -> tuple[list[Change], list[Change]]:
        async with Simulation(seed=13) as sim:
            changes = ViewChanges(sim)
            await sim.start(3)
            await sim.wait_until(sim.converged, timeout=10)
            await sim.crash("n2")
            await sim.wait_until(lambda: sim.all_see("n2", "dead"), timeout=10)
            return changes.events, sim.events

    from_the_hook, recorded = simulate(scenario)
    assert len(from_the_hook) >= 6  # the joins alone
    assert recorded == from_the_hook


def test_the_partition_table_follows_the_membership() -> None:
    async def scenario() -> None:
        async with Simulation(seed=14, options={"replica_count": 1}) as sim:
            await sim.start(4)
            await sim.wait_until(sim.converged, timeout=10)
            table = sim.nodes["n0"].ensure_table()
            assert {r[0] for r in table.replicas} == {"n0", "n1", "n2", "n3"}
            await sim.crash("n3")
            await sim.wait_until(lambda: sim.all_see("n3", "dead"), timeout=10)
            table = sim.nodes["n0"].ensure_table()
            assert {r[0] for r in table.replicas} == {"n0", "n1", "n2"}

    simulate(scenario)
