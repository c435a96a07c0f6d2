"""A small blocking RESP client: what ``gridkv status``, ``get``, ``set`` and ``del`` use.

It speaks RESP2 to a node's door (or to any Redis server) over one TCP connection, replies
parsed by hiredis. Errors are GridKV's: :class:`~gridkv.PeerUnavailable` when the door cannot
be reached or the connection breaks, :class:`RespCommandError` for an error reply.
"""

from __future__ import annotations

import socket
from typing import Any

import hiredis

from gridkv.base.errors import GridKVError, PeerUnavailable, ProtocolError

__all__ = ["RespClient", "RespCommandError"]


class RespCommandError(GridKVError):
    """The server answered a command with an error reply (its text is the message)."""


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise PeerUnavailable(f"expected HOST:PORT for the door's address, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class RespClient:
    """One connection to a RESP server.

    :param address: ``host:port`` of the door.
    :param password: sent with AUTH after connecting (with ``user`` when given).
    :param timeout: seconds to connect and for each reply.
    :raises PeerUnavailable: the door cannot be reached.
    :raises RespCommandError: AUTH was refused.
    """

    def __init__(
        self, address: str, password: str = "", user: str = "", timeout: float = 5.0
    ) -> None:
        self.address = address
        host, port = _split(address)
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise PeerUnavailable(
                f"cannot reach the RESP door at {address}: {exc.strerror or exc}; is the node "
                "running with --resp (resp.listen)?"
            ) from None
        self._reader = hiredis.Reader()
        if password:
            self.call("AUTH", *([user] if user else []), password)

    def __enter__(self) -> RespClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(self, *args: str | bytes | int) -> Any:
        """Send one command; its reply (bytes, int, list, or ``None``).

        :raises RespCommandError: an error reply.
        :raises PeerUnavailable: the connection broke or timed out.
        """
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)
        try:
            self._sock.sendall(request)
            while (reply := self._reader.gets()) is False:
                data = self._sock.recv(65536)
                if not data:
                    raise PeerUnavailable(f"the door at {self.address} closed the connection")
                self._reader.feed(data)
        except OSError as exc:
            raise PeerUnavailable(f"the door at {self.address}: {exc.strerror or exc}") from None
        except hiredis.ProtocolError as exc:
            raise ProtocolError(f"malformed reply from {self.address}: {exc}") from None
        if isinstance(reply, hiredis.ReplyError):
            raise RespCommandError(str(reply))
        return reply

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()
