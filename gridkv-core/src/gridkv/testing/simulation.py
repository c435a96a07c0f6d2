"""Whole clusters in one process: N nodes over the memory transport, on virtual time.

A :class:`Simulation` runs real :class:`~gridkv.node.Node` objects (real membership, codec
and memory transport) on a :class:`~gridkv.testing.virtual_time.VirtualTimeLoop`, and can make
the network and the nodes misbehave: loss, delay, partitions, crashes, stalls (a node that stops
processing for a while) and restarts. Every random choice comes from the simulation's seed, so
a scenario replays identically.

Use it inside :func:`~gridkv.testing.virtual_time.run_virtual`::

    async def scenario() -> None:
        async with Simulation(seed=1) as sim:
            await sim.start(10)
            await sim.wait_until(sim.converged, timeout=30)
            await sim.crash("n3")
            await sim.wait_until(lambda: sim.all_see("n3", "dead"), timeout=30)

    run_virtual(scenario())
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from gridkv.api.aio import AsyncGridKV
from gridkv.base.options import Options
from gridkv.cluster.context import MemberInfo
from gridkv.cluster.membership.driver import SwimMembership
from gridkv.node import Node
from gridkv.plugins import Plugins
from gridkv.plugins.hookspecs import NodeHandle, hookimpl
from gridkv.transport.memory import MemoryNetwork, MemoryTransport

__all__ = ["Simulation", "SIMULATION_OPTIONS"]

#: Options every simulated node gets unless the simulation overrides them: a small, cheap
#: partition table and quiet logs.
SIMULATION_OPTIONS: dict[str, Any] = {
    "disable_auth": True,
    "partition_count": 64,
    "virtual_nodes": 8,
    "log": {"level": "warning"},
    "storage": {"expiry_interval": "60s"},
}
_EPOCH = 1_700_000_000.0


class Simulation:
    """A cluster of nodes in one process.

    :param seed: seed of every random choice (network faults and each node's protocol).
    :param loss: fraction of frames the network drops.
    :param delay: ``(low, high)`` network delay in seconds.
    :param options: option overrides for every node (merged over :data:`SIMULATION_OPTIONS`).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.0002, 0.002),
        options: dict[str, Any] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(f"simulation:{seed}")
        self.network = MemoryNetwork(seed, loss=loss, delay=delay)
        self.base_options = {**SIMULATION_OPTIONS, **(options or {})}
        self.nodes: dict[str, Node] = {}
        self.crashed: set[str] = set()
        # node id -> [(crashed at, restarted at or inf)]: when a node was really down.
        self._down: dict[str, list[list[float]]] = {}
        self.plugins = Plugins()
        self._restarts: dict[str, int] = {}
        #: Every member state change seen by any node: (time, observer, member, old, new),
        #: recorded through the public ``gridkv_member_changed`` hook.
        self.events: list[tuple[float, str, str, str | None, str]] = []
        self.plugins.register(_EventRecorder(self), name="gridkv-simulation-events")
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- time ----------------------------------------------------------------------------

    def now(self) -> float:
        """The loop's (virtual) time in seconds."""
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _wall(self) -> float:
        return _EPOCH + self.now()

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float, step: float = 0.01
    ) -> float:
        """Wait until ``predicate()`` holds; return the time it took.

        :raises TimeoutError: not within ``timeout`` seconds (virtual).
        """
        start = self.now()
        while not predicate():
            if self.now() - start > timeout:
                raise TimeoutError(f"condition not met within {timeout}s of simulated time")
            await asyncio.sleep(step)
        return self.now() - start

    async def run_for(self, seconds: float) -> None:
        """Let the cluster run for ``seconds``."""
        await asyncio.sleep(seconds)

    # -- nodes ---------------------------------------------------------------------------

    @staticmethod
    def address_of(node_id: str) -> str:
        """The address a node id is given by default."""
        return f"{node_id}:7946"

    def options_for(self, node_id: str, address: str, seeds: list[str], **extra: Any) -> Options:
        """The options of a simulated node."""
        data = {
            **self.base_options,
            "local_node_id": node_id,
            "local_address": address,
            "seed_addrs": seeds,
            **extra,
        }
        return Options.from_mapping(data)

    async def add(
        self,
        node_id: str,
        *,
        seeds: Iterable[str] | None = None,
        address: str | None = None,
        **extra: Any,
    ) -> Node:
        """Start one node; it joins through ``seeds`` (addresses; default: up to 3 live nodes)."""
        address = address or self.address_of(node_id)
        if seeds is None:
            live = [n for n in self.nodes.values() if n.running]
            seeds = [n.transport.local_address for n in live[:3]]
        options = self.options_for(node_id, address, list(seeds), **extra)
        restarts = self._restarts.get(node_id, 0)
        node = Node(
            options,
            transport=MemoryTransport(address, self.network, timeout=options.network.read_timeout),
            plugins=self.plugins,
            clock=self._wall,
            rng_seed=f"{self.seed}:{restarts}",
        )
        self.nodes[node_id] = node
        self.crashed.discard(node_id)
        for interval in self._down.get(node_id, []):
            interval[1] = min(interval[1], self.now())
        await node.start()
        return node

    async def start(self, count: int, prefix: str = "n", stagger: float = 0.0) -> list[Node]:
        """Start ``count`` nodes named ``<prefix>0`` ...; all but the first join through it."""
        first = await self.add(f"{prefix}0", seeds=[])
        started = [first]
        for i in range(1, count):
            if stagger:
                await asyncio.sleep(stagger)
            started.append(await self.add(f"{prefix}{i}", seeds=[first.transport.local_address]))
        return started

    async def crash(self, node_id: str) -> None:
        """Kill a node abruptly: no leave, nothing drained."""
        node = self.nodes[node_id]
        self.crashed.add(node_id)
        self._down.setdefault(node_id, []).append([self.now(), float("inf")])
        await node.kill()

    async def leave(self, node_id: str) -> None:
        """Close a node gracefully (it announces its leave)."""
        await self.nodes[node_id].close()

    def stall(self, node_id: str, seconds: float) -> None:
        """Freeze a node for ``seconds``: it neither runs timers nor reads messages."""
        node = self.nodes[node_id]
        membership = node.membership
        if isinstance(membership, SwimMembership):
            membership.stall(seconds)
        transport = node.transport
        if isinstance(transport, MemoryTransport):
            transport.stall(seconds)

    async def restart(self, node_id: str, address: str | None = None) -> Node:
        """Start a crashed or closed node again with the same id (same or new address)."""
        old = self.nodes[node_id]
        if old.running:
            await self.crash(node_id)
        self._restarts[node_id] = self._restarts.get(node_id, 0) + 1
        live = [n for n in self.nodes.values() if n.running]
        seeds = [n.transport.local_address for n in live[:3]]
        return await self.add(node_id, seeds=seeds, address=address or old.transport.local_address)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut the network between the groups of node ids."""
        sides = [[self.nodes[n].transport.local_address for n in g] for g in groups]
        for i, a in enumerate(sides):
            for b in sides[i + 1 :]:
                self.network.partition(a, b)

    def heal(self) -> None:
        """Restore every link."""
        self.network.heal()

    def client(self, node_id: str) -> AsyncGridKV:
        """The public asyncio API of a simulated node."""
        return AsyncGridKV.for_node(self.nodes[node_id])

    # -- views ---------------------------------------------------------------------------

    def live(self) -> list[Node]:
        """Nodes running."""
        return [n for n in self.nodes.values() if n.running]

    def view(self, node_id: str) -> dict[str, str]:
        """``member -> state`` in one node's view."""
        return {m.node_id: m.state for m in self.nodes[node_id].membership.members()}

    def all_see(self, member: str, state: str, observers: Iterable[str] | None = None) -> bool:
        """Whether every observer (default: every live node but ``member``) sees that state."""
        ids = (
            observers
            if observers is not None
            else [n.node_id for n in self.live() if n.node_id != member]
        )
        return all(self.view(o).get(member) == state for o in ids)

    def converged(self, ids: Iterable[str] | None = None) -> bool:
        """Whether every given live node (default: all) sees exactly the live nodes as alive."""
        nodes = [self.nodes[i] for i in ids] if ids is not None else self.live()
        expected = {n.node_id for n in nodes}
        for node in nodes:
            view = self.view(node.node_id)
            alive = {m for m, s in view.items() if s == "alive"}
            if alive != expected:
                return False
        return True

    def false_deaths(self) -> list[tuple[float, str, str]]:
        """Every time a node was declared dead while it was running: ``(time, by, whom)``."""
        return [
            (t, observer, member)
            for t, observer, member, _, new in self.events
            if new == "dead"
            and not any(start <= t <= end for start, end in self._down.get(member, []))
        ]

    async def close(self) -> None:
        """Stop every node at once."""
        for node in list(self.nodes.values()):
            if node.running:
                await node.kill()


class _EventRecorder:
    """Records every member state change any node of a simulation reports."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim

    @hookimpl
    def gridkv_member_changed(
        self, node: NodeHandle, member: MemberInfo, old: str | None, new: str
    ) -> None:
        """Append ``(time, observer, member, old, new)`` to the simulation's events."""
        self._sim.events.append((self._sim.now(), node.node_id, member.node_id, old, new))
