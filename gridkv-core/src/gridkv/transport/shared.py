"""What the parts of one network transport share: its limits, counters, handler and budget.

A network transport (tcp, quic) makes one :class:`TransportState` and hands it to every
connection it opens or accepts, so a connection reaches what it uses (the limits it enforces,
the counters, the handler, the node's inbound budget, the answers running) and not the
transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from gridkv.base.errors import PeerUnavailable
from gridkv.transport.base import Handler, Handshake, TransportCounters, check_outbound

__all__ = ["TransportState"]


class TransportState:
    """The state and limits a network transport's connections have in common.

    The limits are the transport's constructor arguments (see the ``network`` options).
    """

    __slots__ = (
        "address",
        "closed",
        "counters",
        "dial_timeout",
        "handler",
        "handshake",
        "inbound",
        "max_frame_bytes",
        "max_inbound_buffer_bytes",
        "max_output_buffer_bytes",
        "read_timeout",
        "tasks",
        "write_timeout",
    )

    def __init__(
        self,
        address: str,
        *,
        dial_timeout: float,
        read_timeout: float,
        write_timeout: float,
        max_frame_bytes: int,
        max_output_buffer_bytes: int,
        max_inbound_buffer_bytes: int,
    ) -> None:
        #: The address peers reach the transport at (with the port it got, once listening).
        self.address = address
        #: Set by the transport's ``close``: nothing more is sent or dialled.
        self.closed = False
        self.dial_timeout = dial_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_frame_bytes = max_frame_bytes
        self.max_output_buffer_bytes = max_output_buffer_bytes
        self.max_inbound_buffer_bytes = max_inbound_buffer_bytes
        self.counters = TransportCounters()
        #: Where inbound frames go, and the handshake connections run (from ``start``).
        self.handler: Handler | None = None
        self.handshake: Handshake | None = None
        #: Bytes of unfinished inbound frames held by all connections: the node's inbound
        #: budget, ``max_inbound_buffer_bytes`` at most.
        self.inbound = 0
        #: The awaitable answers running, across connections.
        self.tasks: set[asyncio.Task[None]] = set()

    def check_outbound(self, kind: str, address: str, size: int) -> None:
        """The checks before a frame of ``size`` bytes goes to ``address``.

        See :func:`~gridkv.transport.base.check_outbound`.

        :raises ShuttingDown: the transport is closed.
        :raises ProtocolError: the frame is over ``max_frame_bytes``.
        """
        check_outbound(
            kind,
            self.address,
            self.closed,
            address,
            size,
            self.max_frame_bytes,
            self.counters,
        )

    def over_budget(self, peer: str) -> PeerUnavailable | None:
        """The error that cuts ``peer``'s connection past the inbound budget, counted.

        ``None`` while the inbound bytes held are within ``max_inbound_buffer_bytes``.
        """
        if self.inbound <= self.max_inbound_buffer_bytes:
            return None
        self.counters.inbound_full_cuts += 1
        return PeerUnavailable(
            f"{peer!r} took the node past {self.max_inbound_buffer_bytes} bytes of unfinished "
            "inbound frames (network.max_inbound_buffer_bytes)"
        )

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an awaitable answer as a task, kept until it ends (close cancels the rest)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
