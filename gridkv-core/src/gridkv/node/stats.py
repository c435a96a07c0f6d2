"""The figures :meth:`gridkv.AsyncGridKV.stats` returns, and their readable table form."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gridkv.cluster.context import MemberInfo
from gridkv.storage.base import StorageStats
from gridkv.transport.base import TransportStats

__all__ = [
    "Stats",
    "ClusterStats",
    "MemberInfo",
    "NetworkStats",
    "OperationCounts",
    "OperationLatency",
    "ReplicationStats",
    "StorageStats",
    "human_bytes",
    "human_seconds",
]

#: The network figures are the transport's counters.
NetworkStats = TransportStats


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """This node's view of the cluster.

    :ivar ready: whether :meth:`~gridkv.AsyncGridKV.wait_ready` would return now.
    :ivar cluster_size: members in the view, this node included, dead ones not.
    :ivar healthy_nodes: members alive in the view.
    :ivar replica_factor: the configured ``replica_count``.
    :ivar local_node_id: this node's id.
    :ivar pubkeys_ready: whether the public key of every live peer in the view is known
        (always true without authentication, which uses none).
    :ivar pubkey_count: live peers whose public key is known (authenticated).
    :ivar peer_count: members other than this node.
    :ivar members: every member in the view.
    :ivar health_score: this node's own health score (Lifeguard; 0 is healthy): each point
        stretches its probe period and time-outs by one more multiple, and it rises when this
        node misses nacks or its timers run late.
    """

    ready: bool
    cluster_size: int
    healthy_nodes: int
    replica_factor: int
    local_node_id: str
    pubkeys_ready: bool
    pubkey_count: int
    peer_count: int
    members: tuple[MemberInfo, ...] = ()
    health_score: int = 0
    #: Frames from peers the authenticator refused, by reason.
    auth_rejections: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        members: tuple[MemberInfo, ...],
        *,
        ready: bool,
        replica_count: int,
        node_id: str,
        health_score: int,
        peer_keys: Mapping[str, bytes] | None = None,
        auth_rejections: Mapping[str, int] | None = None,
    ) -> ClusterStats:
        """The figures of a view of ``members`` (this node among them).

        :param peer_keys: the keys the authenticator knows (``None``: it uses none).
        """
        live = [m for m in members if m.state in ("alive", "suspect")]
        peers = {m.node_id for m in live} - {node_id}
        known = len(peers & set(peer_keys)) if peer_keys is not None else 0
        return cls(
            ready=ready,
            cluster_size=len(live),
            healthy_nodes=sum(1 for m in live if m.state == "alive"),
            replica_factor=replica_count,
            local_node_id=node_id,
            pubkeys_ready=peer_keys is None or known == len(peers),
            pubkey_count=known,
            peer_count=len(live) - 1,
            members=members,
            health_score=health_score,
            auth_rejections=dict(auth_rejections or {}),
        )


@dataclass(frozen=True, slots=True)
class ReplicationStats:
    """What this node sent its co-replicas.

    :ivar backlog_bytes: bytes queued or in flight to replicas, not yet acknowledged, over
        all of them (what a replica would miss if this node stopped now; the time a write
        takes to reach every replica is ``gridkv.replication.lag``).
    :ivar batches_sent: replication batches sent.
    :ivar entries_replicated: entries replicas stored.
    :ivar send_failures: batches that failed (sent again).
    """

    backlog_bytes: int = 0
    batches_sent: int = 0
    entries_replicated: int = 0
    send_failures: int = 0


@dataclass(frozen=True, slots=True)
class OperationLatency:
    """Percentiles of the latest sampled durations of one kind of operation, in seconds.

    :ivar p50: the median.
    :ivar p99: the 99th percentile (nearest rank).
    :ivar samples: the durations they are taken from (see ``docs/metrics.md``).
    """

    p50: float
    p99: float
    samples: int

    @classmethod
    def of(cls, durations: Iterable[float]) -> OperationLatency:
        """The percentiles of ``durations`` (at least one)."""
        ordered = sorted(durations)
        n = len(ordered)

        def rank(q: float) -> float:  # nearest rank: the least with a share q at or below
            return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

        return cls(p50=rank(0.5), p99=rank(0.99), samples=n)


class OperationCounts(dict[str, int]):
    """Operations counted, ``"<operation> <level> <outcome>"`` -> count, with their latency.

    What the node's telemetry hands :class:`Stats`, which keeps the counts as ``operations``
    and :attr:`latency` as its ``latency``.
    """

    latency: dict[str, OperationLatency]

    def __init__(self, *args: Iterable[tuple[str, int]]) -> None:
        super().__init__(*args)
        self.latency = {}


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a node's figures.

    :ivar cluster: the cluster view.
    :ivar network: the transport's counters.
    :ivar storage: the storage backend's figures.
    :ivar version: the gridkv-core version.
    :ivar replication: what this node sent its co-replicas.
    :ivar operations: operations counted, ``"<operation> <level> <outcome>"`` -> count: those
        through the node's loop, ``"set one ok (local)"`` / ``"delete one ok (local)"`` for
        the writes stored here at level one, and ``"get one ok (direct)"`` / ``"set one ok
        (direct)"`` for the blocking facades' direct path. Reads answered from local storage
        (the read fast path) are not counted (see docs/metrics.md).
    :ivar latency: p50 and p99 of the operations through the node's loop, by the same
        ``"<operation> <level> <outcome>"``, from the latest sampled durations of each.
    """

    cluster: ClusterStats
    network: NetworkStats
    storage: StorageStats
    version: str
    replication: ReplicationStats = field(default_factory=ReplicationStats)
    operations: dict[str, int] = field(default_factory=dict)
    latency: dict[str, OperationLatency] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The node hands its telemetry's OperationCounts, which carry the latency as well.
        if isinstance(self.operations, OperationCounts):
            if not self.latency:
                object.__setattr__(self, "latency", dict(self.operations.latency))
            object.__setattr__(self, "operations", dict(self.operations))

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for JSON or logging."""
        return dataclasses.asdict(self)

    def format_table(self) -> str:
        """The figures as an aligned, human-readable table."""
        rows: list[tuple[str, str]] = [("version", self.version)]
        for section_name in ("cluster", "network", "storage", "replication"):
            section = getattr(self, section_name)
            for f in dataclasses.fields(section):
                if f.name == "members":
                    continue
                rows.append((f"{section_name}.{f.name}", _show(f.name, getattr(section, f.name))))
        for name, count in sorted(self.operations.items()):
            rows.append((f"operations.{name.replace(' ', '.')}", str(count)))
        for name, figures in sorted(self.latency.items()):
            rows.append(
                (
                    f"latency.{name.replace(' ', '.')}",
                    f"p50 {human_seconds(figures.p50)}, p99 {human_seconds(figures.p99)} "
                    f"({figures.samples} sampled)",
                )
            )
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        if self.cluster.members:
            lines.append("")
            lines.append(f"{'member':<20} {'address':<22} {'state':<8} incarnation")
            for m in self.cluster.members:
                lines.append(f"{m.node_id:<20} {m.address:<22} {m.state:<8} {m.incarnation}")
        return "\n".join(lines)


def _show(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and name.endswith("bytes"):
        return human_bytes(value) if value else "0 (no limit)" if name == "max_bytes" else "0 B"
    return str(value)


def human_seconds(seconds: float) -> str:
    """A duration for people: ``"85 us"``, ``"1.25 ms"``, ``"2.50 s"``."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def human_bytes(n: int, exact: bool = True) -> str:
    """``n`` bytes for people: ``"1.5 MiB (1572864 B)"``; ``"1.5 MiB"`` if not ``exact``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            if unit == "B":
                return f"{n} B"
            return f"{size:.1f} {unit} ({n} B)" if exact else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
