"""Consistent hashing: keys to partitions, partitions to an ordered list of replicas.

A key maps to one of ``partition_count`` partitions by a stable 64-bit hash (xxh3) of its
UTF-8 bytes, the same on every node and in every process (:mod:`gridkv.base.keys`). Each node
takes ``virtual_nodes`` points on a 64-bit hash ring; partition ``p`` sits at the evenly
spaced ring position ``p * 2**64 / partition_count`` and its replicas are the first
``replica_count`` distinct nodes met walking clockwise from there. The first replica is the
partition's primary owner.

Pure consistent hashing leaves some nodes with 20 to 50% more partitions than the mean at 150
virtual nodes. The table therefore uses consistent hashing with bounded loads (Mirrokni, Thorup
and Zadimoghaddam, 2018): walking clockwise, a node that already holds ``LOAD_BOUND`` times its
fair share of primaries (or of replica slots) is passed over. That caps the imbalance at 10%
while a membership change still moves only slightly more than ``1/N`` of the partitions.

:class:`PartitionTable` is computed once per membership change, so routing a key is a hash and
two list lookups. Adding or removing a node moves only the partitions whose ring arcs it takes
or gives up, about ``1/N`` of them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import xxhash

from gridkv.base.keys import key_hash, partition_of

__all__ = ["key_hash", "partition_of", "HashRing", "PartitionTable", "LOAD_BOUND"]

_RING = 1 << 64
#: A node holds at most this many times its fair share of primaries and of replica slots.
LOAD_BOUND = 1.1
_xxh3 = xxhash.xxh3_64_intdigest


class HashRing:
    """A ring of node points; ``virtual_nodes`` points per node."""

    __slots__ = ("_nodes", "_owners", "_points", "virtual_nodes")

    def __init__(self, nodes: Iterable[str] = (), virtual_nodes: int = 150) -> None:
        if virtual_nodes < 1:
            raise ValueError(f"virtual_nodes must be at least 1, got {virtual_nodes}")
        self.virtual_nodes = virtual_nodes
        self._nodes: set[str] = set()
        self._points: list[int] = []
        self._owners: list[str] = []
        for node in nodes:
            self._nodes.add(node)
        self._rebuild()

    def _rebuild(self) -> None:
        pairs = sorted(
            (_xxh3(f"{node}#{i}".encode()), node)
            for node in self._nodes
            for i in range(self.virtual_nodes)
        )
        self._points = [p for p, _ in pairs]
        self._owners = [n for _, n in pairs]

    @property
    def nodes(self) -> frozenset[str]:
        """The node ids on the ring."""
        return frozenset(self._nodes)

    def add(self, node: str) -> None:
        """Put a node on the ring (no-op when it is there)."""
        if node not in self._nodes:
            self._nodes.add(node)
            self._rebuild()

    def remove(self, node: str) -> None:
        """Take a node off the ring (no-op when it is not there)."""
        if node in self._nodes:
            self._nodes.discard(node)
            self._rebuild()

    def start_index(self, position: int) -> int:
        """Index of the first ring point at or after ``position`` (wrapping round)."""
        return bisect.bisect_left(self._points, position) % len(self._points)

    @property
    def point_owners(self) -> list[str]:
        """The node of each ring point, in ring order."""
        return self._owners

    def walk(self, position: int, count: int) -> tuple[str, ...]:
        """The first ``count`` distinct nodes clockwise from ``position``."""
        want = min(count, len(self._nodes))
        out: list[str] = []
        points = self._owners
        n = len(points)
        if n == 0:
            return ()
        i = bisect.bisect_left(self._points, position) % n
        for step in range(n):
            node = points[(i + step) % n]
            if node not in out:
                out.append(node)
                if len(out) == want:
                    break
        return tuple(out)


@dataclass(frozen=True, slots=True)
class PartitionTable:
    """Partition -> ordered replica list, for one membership view.

    :ivar replicas: ``replicas[p]`` is partition ``p``'s replicas, primary first.
    """

    partition_count: int
    replica_count: int
    replicas: tuple[tuple[str, ...], ...]

    @classmethod
    def build(
        cls, nodes: Iterable[str], partition_count: int, replica_count: int, virtual_nodes: int
    ) -> PartitionTable:
        """Compute the table for ``nodes`` (the same on every node for the same inputs)."""
        ring = HashRing(nodes, virtual_nodes)
        members = sorted(ring.nodes)
        if not members:
            return cls(partition_count, replica_count, ((),) * partition_count)
        want = min(replica_count, len(members))
        cap_primary = math.ceil(partition_count / len(members) * LOAD_BOUND)
        cap_slots = math.ceil(partition_count * want / len(members) * LOAD_BOUND)
        primaries = dict.fromkeys(members, 0)
        slots = dict.fromkeys(members, 0)
        owners = ring.point_owners
        n = len(owners)
        step = _RING // partition_count
        table: list[tuple[str, ...]] = []
        for p in range(partition_count):
            start = ring.start_index(p * step)
            chosen: list[str] = []
            for relaxed in (False, True):
                for i in range(n):
                    node = owners[(start + i) % n]
                    if node in chosen:
                        continue
                    full = primaries[node] >= cap_primary if not chosen else False
                    if not relaxed and (full or slots[node] >= cap_slots):
                        continue
                    chosen.append(node)
                    if len(chosen) == want:
                        break
                if len(chosen) == want:
                    break
            primaries[chosen[0]] += 1
            for node in chosen:
                slots[node] += 1
            table.append(tuple(chosen))
        return cls(partition_count, replica_count, tuple(table))

    def partition_of(self, key: str) -> int:
        """The partition a key belongs to (:func:`~gridkv.base.keys.partition_of`)."""
        return partition_of(key, self.partition_count)

    def owners(self, partition: int) -> tuple[str, ...]:
        """The replicas of ``partition``, primary first."""
        return self.replicas[partition]

    def owned_mask(self, node: str) -> bytearray:
        """``mask[p]`` is 1 when ``node`` is one of partition ``p``'s replicas."""
        return bytearray(1 if node in r else 0 for r in self.replicas)

    def primaries(self) -> dict[str, int]:
        """Number of partitions each node is primary for."""
        counts: dict[str, int] = {}
        for r in self.replicas:
            if r:
                counts[r[0]] = counts.get(r[0], 0) + 1
        return counts

    def moved_partitions(self, other: PartitionTable) -> Sequence[int]:
        """Partitions whose primary differs between this table and ``other``."""
        return [
            p
            for p, (a, b) in enumerate(zip(self.replicas, other.replicas, strict=True))
            if (a[:1] != b[:1])
        ]
