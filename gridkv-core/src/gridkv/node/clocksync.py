"""After a join: adopt the greatest clock among the members before taking writes.

The peers' clocks advanced past every version this node stored there before a restart, so
its first write afterwards orders after all of them. The node asks every live member for its
clock (a :class:`~gridkv.wire.messages.Ping`, answered with a
:class:`~gridkv.wire.messages.Pong` that carries it), at most
:data:`CONCURRENCY` at once, in up to :data:`ROUNDS` rounds until one answers.
"""

from __future__ import annotations

import asyncio
import logging

from gridkv.base.errors import ClockDriftExceeded, GridKVError
from gridkv.base.hlc import HLC
from gridkv.base.log import LOGGER_NAME
from gridkv.cluster.context import Messaging
from gridkv.cluster.membership.base import Membership
from gridkv.wire.messages import Ping, Pong

__all__ = ["adopt_peer_clocks", "CONCURRENCY", "ROUNDS"]

log = logging.getLogger(LOGGER_NAME)
#: Members asked for their clock at once.
CONCURRENCY = 64
#: Rounds of asking until a member answers.
ROUNDS = 3


async def adopt_peer_clocks(
    node_id: str, membership: Membership, messaging: Messaging, hlc: HLC, timeout: float
) -> bool:
    """Ask the live members for their clocks and adopt each one; whether any answered.

    :param timeout: seconds each member has to answer.
    """
    gate = asyncio.Semaphore(CONCURRENCY)

    async def ask(member: str) -> bool:
        address = membership.address_of(member)
        if address is None:
            return False
        async with gate:
            try:
                reply = await messaging.request(address, Ping(0, node_id), timeout)
            except GridKVError:
                return False
        if not isinstance(reply, Pong):
            return False
        try:
            hlc.update(reply.clock)
        except ClockDriftExceeded as exc:
            log.warning(
                "a member's clock is too far ahead to adopt",
                extra={"peer": member, "error": str(exc)},
            )
        return True

    for _ in range(ROUNDS):
        members = [m for m in membership.live_ids() if m != node_id]
        if not members:
            return True
        if any(await asyncio.gather(*(ask(m) for m in members))):
            return True
    log.warning(
        "no member answered with its clock; taking writes on this node's own clock",
        extra={"node_id": node_id},
    )
    return False
