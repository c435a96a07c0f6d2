"""The TCP transport for GridKV (asyncio Protocol, pooled connections, TLS).

This distribution is registered as the GridKV plugin ``tcp`` (entry-point group
``gridkv.plugins``). The transport itself is :class:`gridkv_transport_tcp.transport.TcpTransport`;
the plugin does not register it as a backend yet (the TCP issue finishes that), so until then
GridKV behaves exactly as if this distribution were not installed.
"""

from __future__ import annotations

__all__: list[str] = []
