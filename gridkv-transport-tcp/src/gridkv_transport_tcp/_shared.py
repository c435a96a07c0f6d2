"""What the parts of one tcp transport share: its limits, counters, handler and inbound budget."""

from __future__ import annotations

from gridkv.transport.shared import TransportState

__all__ = ["Shared"]


class Shared(TransportState):
    """The state and limits one tcp transport's pool and connections have in common.

    The transport makes one and hands it to the pool and to every connection (see
    :class:`~gridkv.transport.shared.TransportState`); tcp adds nothing to it.
    """

    __slots__ = ()
