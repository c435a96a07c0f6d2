"""Transports: the :class:`Transport` interface and the in-process memory transport."""

from __future__ import annotations

from gridkv.transport.base import (
    ConnectionGuard,
    Handler,
    Handshake,
    Transport,
    TransportFactory,
    TransportStats,
)
from gridkv.transport.memory import MemoryNetwork, MemoryTransport

__all__ = [
    "ConnectionGuard",
    "Handler",
    "Handshake",
    "Transport",
    "TransportFactory",
    "TransportStats",
    "MemoryNetwork",
    "MemoryTransport",
]
