"""The authenticator of ``disable_auth = True``: it checks nothing and signs nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.transport.base import Handshake

__all__ = ["NoAuthentication"]


class NoAuthentication:
    """Accepts every peer and passes frames as they are ("none")."""

    name = "none"

    @property
    def handshake(self) -> Handshake | None:
        """No handshake: connections carry frames at once."""
        return None

    def wrap(self, payload: bytes) -> bytes:
        """``payload`` itself."""
        return payload

    def unwrap(self, peer: str, payload: bytes) -> bytes:
        """``payload`` itself."""
        return payload

    @classmethod
    def from_options(cls, options: Options) -> NoAuthentication:
        """The authenticator (the options change nothing)."""
        return cls()
