"""The membership interface: what a node needs from its failure detector."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gridkv.cluster.context import MemberInfo
from gridkv.wire.messages import Message

if TYPE_CHECKING:
    from gridkv.cluster.context import MembershipContext

__all__ = ["Membership", "MembershipFactory", "MemberInfo"]


@runtime_checkable
class Membership(Protocol):
    """A membership protocol bound to one node.

    It owns the node's view of the cluster: who is alive, suspected, dead or gone. It sends
    through the context's messaging port (so the security layer covers it), reports every
    state change to ``ctx.on_member_change``, and calls ``ctx.on_forgotten`` when this node
    must drop what it held before a separation so long that the cluster forgot it.
    """

    name: str

    async def start(self) -> None:
        """Start probing and join through the seeds (in the background)."""

    async def leave(self, timeout: float) -> None:
        """Announce a graceful leave; waits at most ``timeout`` seconds for it to go out.

        Afterwards the protocol sends nothing, and its view no longer counts this node, but
        it keeps taking in what it hears until :meth:`stop` (the node hands its data over
        meanwhile, and must see who else left).
        """

    async def stop(self) -> None:
        """Stop at once, without a word to anybody (a crash, or the end of a leave)."""

    def handle(self, peer: str, message: Message) -> Message | None:
        """Take a membership message from ``peer``; return the answer to a request."""

    def members(self) -> list[MemberInfo]:
        """Every member in the view, this node included."""

    def live_ids(self) -> list[str]:
        """Ids of the members alive or suspected, this node included."""

    def address_of(self, node_id: str) -> str | None:
        """Where a member is reached, ``None`` when it is not in the view."""

    def state_of(self, node_id: str) -> str | None:
        """A member's state ("alive", "suspect", "dead", "left"), ``None`` when unknown."""

    def oldest_taken(self, node_id: str) -> int:
        """The oldest version (an HLC timestamp) this node takes from ``node_id``; 0: any.

        Above 0 while ``node_id`` is back from a separation longer than ``dead_retention``
        and has not yet dropped what predates it (see
        :mod:`gridkv.cluster.membership.separation`).
        """

    @property
    def joined(self) -> bool:
        """Whether a seed answered the join (always true for a node without seeds)."""

    @property
    def ready(self) -> bool:
        """Whether the node joined (or needs no seeds) and its view is stable."""

    async def wait_joined(self) -> None:
        """Wait until :attr:`joined` (returns at once for a node without seeds)."""

    async def wait_ready(self, timeout: float) -> None:
        """Wait until :attr:`ready`.

        :raises NotReady: not ready in time; the message says what is missing.
        """

    def health_problem(self) -> str | None:
        """Why the node has no healthy view of the cluster, or ``None`` when it has one."""

    def announce(self) -> None:
        """Spread this node's own record again, at a raised incarnation.

        After its key rotated: the record's proof is then made with the new key, and members
        (and newcomers) stop depending on the old one.
        """


class MembershipFactory(Protocol):
    """Builds a node's membership protocol; registered through ``gridkv_register_membership``."""

    def __call__(self, ctx: MembershipContext) -> Membership:
        """Return a new, not yet started membership protocol for the node ``ctx`` describes."""
