"""The TCP transport for GridKV (asyncio Protocol, pooled connections, TLS).

Installing this distribution registers the transport ``tcp`` through the ``gridkv.plugins``
entry point; ``network.type = "tcp"`` selects it, and it is the default while it is installed.
The transport is :class:`gridkv_transport_tcp.transport.TcpTransport`. With the ``uvloop``
extra (``pip install "gridkv-transport-tcp[uvloop]"``) GridKV's own event loops run on uvloop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gridkv import hookimpl

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.transport.base import Transport, TransportFactory

__all__ = ["gridkv_register_transports"]


def _tcp(options: Options) -> Transport:
    from gridkv_transport_tcp.transport import TcpTransport

    return TcpTransport.from_options(options)


@hookimpl
def gridkv_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    """Register the ``tcp`` transport."""
    register("tcp", _tcp)
