"""The QUIC transport for GridKV (aioquic): mutual TLS 1.3, requests on a few long-lived lanes.

Installing this distribution registers the transport ``quic`` through the ``gridkv.plugins``
entry point; ``network.type = "quic"`` selects it. It needs the node's certificate, key and
the cluster CA in ``network.ssl`` (``gridkv certs create`` writes them). The transport is
:class:`gridkv_transport_quic.transport.QuicTransport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gridkv import hookimpl

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.transport.base import Transport, TransportFactory

__all__ = ["gridkv_register_transports"]


def _quic(options: Options) -> Transport:
    from gridkv_transport_quic.transport import QuicTransport

    return QuicTransport.from_options(options)


@hookimpl
def gridkv_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    """Register the ``quic`` transport."""
    register("quic", _quic)
