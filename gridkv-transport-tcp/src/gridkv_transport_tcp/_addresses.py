"""The tcp transport's addresses: ``host:port`` text to what sockets take."""

from __future__ import annotations

from gridkv.base.errors import PeerUnavailable

__all__ = ["split_address"]


def split_address(address: str, *, listening: bool = False) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) to ``(host, port)``.

    :param listening: the address is one to listen on, where port 0 means "any free port".
    :raises PeerUnavailable: the address has no valid port.
    """
    host, sep, port = address.rpartition(":")
    if (
        not sep
        or not port.isdigit()
        or not int(port) >= (0 if listening else 1)
        or int(port) > 65535
    ):
        raise PeerUnavailable(f"address {address!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)
