"""A network partition around any transport, for fault tests of real processes.

:class:`PartitionableTransport` wraps a transport (TCP, QUIC, memory) and black-holes what this
node sends to the addresses it is told to cut off, the way a firewall dropping packets does:
a request to a cut-off peer waits its whole time-out and fails with
:class:`~gridkv.base.errors.PeerTimeout`, a one-way frame vanishes. Cutting the same pair off on
both sides makes a symmetric partition; cutting one side only, an asymmetric one. Frames
already on their way, and answers to requests the peer sent first, still arrive.
"""

from __future__ import annotations

import asyncio

from gridkv.base.errors import PeerTimeout
from gridkv.transport.base import Handler, Handshake, Transport, TransportStats

__all__ = ["PartitionableTransport"]


class PartitionableTransport:
    """``inner``, with the sends to the addresses in :attr:`blocked` dropped.

    :param inner: the real transport.
    :param default_timeout: the request time-out when the caller passes none (the inner
        transport's configured one).
    """

    def __init__(self, inner: Transport, default_timeout: float) -> None:
        self.inner = inner
        self.name = inner.name
        self._timeout = default_timeout
        #: Addresses this node cannot reach now.
        self.blocked: set[str] = set()
        #: Frames dropped so far.
        self.dropped = 0

    @property
    def local_address(self) -> str:
        """The inner transport's address."""
        return self.inner.local_address

    async def start(self, handler: Handler, handshake: Handshake | None = None) -> bool:
        """Start the inner transport; whether it runs ``handshake``."""
        return await self.inner.start(handler, handshake)

    async def request(self, address: str, payload: bytes, timeout: float | None = None) -> bytes:
        """The inner request, or a time-out when ``address`` is cut off."""
        if address in self.blocked:
            self.dropped += 1
            wait = self._timeout if timeout is None else timeout
            await asyncio.sleep(wait)
            raise PeerTimeout(f"{address!r} did not answer within {wait:g}s (cut off)")
        return await self.inner.request(address, payload, timeout)

    async def send(self, address: str, payload: bytes) -> None:
        """The inner send; nothing when ``address`` is cut off."""
        if address in self.blocked:
            self.dropped += 1
            return
        await self.inner.send(address, payload)

    async def close(self) -> None:
        """Close the inner transport."""
        await self.inner.close()

    def stats(self) -> TransportStats:
        """The inner transport's counters."""
        return self.inner.stats()
