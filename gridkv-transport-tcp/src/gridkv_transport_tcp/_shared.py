"""What the parts of one tcp transport share: its limits, counters, handler and inbound budget."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from gridkv.transport.base import Handler, Handshake, TransportCounters

__all__ = ["Shared"]


class Shared:
    """The state and limits one tcp transport's pool and connections have in common.

    The transport makes one and hands it to the pool and to every connection, so a connection
    reaches what it uses (the limits it enforces, the counters, the handler, the node's inbound
    budget) and not the transport. The limits are the transport's constructor arguments.
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
        #: Set by :meth:`TcpTransport.close`: nothing more is sent or dialled.
        self.closed = False
        self.dial_timeout = dial_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_frame_bytes = max_frame_bytes
        self.max_output_buffer_bytes = max_output_buffer_bytes
        self.max_inbound_buffer_bytes = max_inbound_buffer_bytes
        self.counters = TransportCounters()
        #: Where inbound frames go, and the hello each new connection exchanges (from start).
        self.handler: Handler | None = None
        self.handshake: Handshake | None = None
        #: Bytes of unfinished inbound frames held by all connections: the node's inbound
        #: budget, ``max_inbound_buffer_bytes`` at most.
        self.inbound = 0
        #: The awaitable answers running, across connections.
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an awaitable answer as a task, kept until it ends (close cancels the rest)."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
