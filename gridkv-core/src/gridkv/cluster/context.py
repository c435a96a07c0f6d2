"""What the node hands the cluster components: narrow views, never the node itself.

A component receives the few things it uses: a :class:`Messaging` port (requests and one-way
sends to other nodes, through the security layer), the storage, a :class:`PartitionView` of
the partition table, a :class:`MembershipView` of who is where, the clock, and the options,
in one :class:`ClusterContext`; links to its siblings are passed as the callables it needs.
So a component can be read, tested and simulated on its own, and nothing in this layer
imports the node. A membership protocol, which the other components' views rest on, gets a
:class:`MembershipContext` of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gridkv.base.hlc import HLC
    from gridkv.base.options import Options
    from gridkv.cluster.ring import PartitionTable
    from gridkv.security.base import RecordProofs
    from gridkv.storage.base import Entry, Storage
    from gridkv.wire.messages import Message

__all__ = [
    "MemberInfo",
    "Messaging",
    "Replica",
    "PartitionView",
    "MembershipView",
    "ClusterContext",
    "MembershipContext",
]


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member in this node's view.

    :ivar node_id: the member's id.
    :ivar address: where it is reached.
    :ivar state: "alive", "suspect", "dead" or "left".
    :ivar incarnation: the member's incarnation number (raised to refute suspicion).
    """

    node_id: str
    address: str
    state: str
    incarnation: int


class Messaging(Protocol):
    """How a component talks to other nodes; every message passes the security layer."""

    async def request(
        self, address: str, message: Message, timeout: float | None = None
    ) -> Message:
        """Send ``message`` to ``address`` and return the decoded answer.

        :raises PeerUnavailable: unreachable, or the peer answered with an error.
        :raises PeerTimeout: no answer in time.
        :raises ProtocolError: the answer is malformed.
        """

    async def send(self, address: str, message: Message) -> None:
        """Send ``message`` one way (no answer, delivery not confirmed).

        :raises PeerUnavailable: the peer is known to be unreachable.
        """


class Replica(Protocol):
    """How anti-entropy and handoff store what they receive and send what they give."""

    def store(self, partition: int, entry: Entry, oldest: int = 0) -> int:
        """Store an entry from a peer by the rules every path follows; the outcome code.

        :param oldest: what ``membership.oldest_taken`` says of the peer; an older entry
            is not stored.
        """

    async def send_batch(self, address: str, entries: list[tuple[int, Entry]]) -> bytes:
        """Send entries as one replication batch; one outcome code per entry."""


class PartitionView(Protocol):
    """The partition table of the current view."""

    def ensure_table(self) -> PartitionTable:
        """The table, rebuilt first if the view changed (any thread)."""

    def holds(self, partition: int) -> bool:
        """Whether this node is one of ``partition``'s replicas now."""


class MembershipView(Protocol):
    """Who is in the cluster and where, as this node sees it."""

    def address_of(self, node_id: str) -> str | None:
        """Where a member is reached, ``None`` when it is not in the view."""

    def state_of(self, node_id: str) -> str | None:
        """A member's state ("alive", "suspect", "dead", "left"), ``None`` when unknown."""

    def live_ids(self) -> list[str]:
        """Ids of the members alive or suspected, this node included."""

    def members(self) -> list[MemberInfo]:
        """Every member in the view, this node included."""

    def oldest_taken(self, node_id: str) -> int:
        """The oldest version (an HLC timestamp) this node takes from ``node_id``; 0: any.

        Above 0 while ``node_id`` is back from a separation longer than ``dead_retention``
        and has not yet dropped what predates it (see
        :mod:`gridkv.cluster.membership.separation`).
        """


@dataclass(frozen=True, slots=True)
class ClusterContext:
    """What every cluster component gets from the node.

    :ivar node_id: this node's id.
    :ivar options: the node's options.
    :ivar messaging: requests and sends to other nodes.
    :ivar storage: the node's storage.
    :ivar hlc: the node's hybrid logical clock.
    :ivar partitions: the partition table.
    :ivar membership: the membership view.
    :ivar clock: the node's wall clock in seconds (virtual in simulations).
    :ivar loop: the node's event loop once it runs, else ``None``.
    :ivar accepting: whether the node runs and takes operations (false once it closes).
    """

    node_id: str
    options: Options
    messaging: Messaging
    storage: Storage
    hlc: HLC
    partitions: PartitionView
    membership: MembershipView
    clock: Callable[[], float]
    loop: Callable[[], asyncio.AbstractEventLoop | None]
    accepting: Callable[[], bool]

    def now_ms(self) -> int:
        """The wall clock in milliseconds."""
        return int(self.clock() * 1000)

    def loop_time(self) -> float:
        """The event loop's clock (monotonic; virtual in simulations), 0 before the loop runs."""
        loop = self.loop()
        return loop.time() if loop is not None else 0.0


@dataclass(frozen=True, slots=True)
class MembershipContext:
    """What a membership protocol gets from the node.

    :ivar node_id: this node's id.
    :ivar options: the node's options.
    :ivar messaging: requests and sends to other nodes.
    :ivar clock: the node's wall clock in seconds.
    :ivar rng_seed: seed of the protocol's random choices (``None``: from the node id).
    :ivar local_address: the address this node is reached at (known once the transport
        listens).
    :ivar on_member_change: to call on every change of a member's state in the view.
    :ivar on_forgotten: to call when the cluster forgot this node after a long separation,
        with the wall-clock milliseconds before which it must drop what it holds.
    :ivar record_proofs: signs and checks member records (``None`` without authentication).
    """

    node_id: str
    options: Options
    messaging: Messaging
    clock: Callable[[], float]
    rng_seed: int | str | None
    local_address: Callable[[], str]
    on_member_change: Callable[[MemberInfo, str | None, str], None]
    on_forgotten: Callable[[int], None]
    record_proofs: RecordProofs | None = None

    def now_ms(self) -> int:
        """The wall clock in milliseconds."""
        return int(self.clock() * 1000)
