"""The authenticator of ``disable_auth = True``: it checks nothing and signs nothing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.security.base import Exchange
    from gridkv.transport.base import Handshake

__all__ = ["NoAuthentication", "PlainChannel", "PLAIN"]


class PlainChannel:
    """Frames as they are; nobody authenticated."""

    peer_id: str | None = None

    def seal(self, payload: bytes, answering: bytes = b"") -> bytes:
        """``payload`` itself."""
        return payload

    def open(self, frame: bytes, answering: bytes = b"") -> bytes:
        """``frame`` itself."""
        return frame


#: The one plain channel (it holds nothing).
PLAIN = PlainChannel()


class NoAuthentication:
    """Accepts every peer and passes frames as they are ("none")."""

    name = "none"

    def handshake(self, node_at: Callable[[str], str | None]) -> Handshake | None:
        """No handshake: connections carry frames at once."""
        return None

    def channel_ready(self, address: str) -> PlainChannel:
        """The plain channel."""
        return PLAIN

    async def channel_to(
        self, address: str, exchange: Exchange, expected: str | None = None
    ) -> PlainChannel:
        """The plain channel."""
        return PLAIN

    def forget(self, address: str) -> None:
        """Nothing to forget."""

    def accept(self, peer: str, frame: bytes) -> tuple[PlainChannel, bytes]:
        """``frame`` as it is, on the plain channel."""
        return PLAIN, frame

    def rejections(self) -> Mapping[str, int]:
        """None: nothing is refused."""
        return {}

    def peer_keys(self) -> None:
        """``None``: no keys are used."""
        return None

    def record_proofs(self) -> None:
        """``None``: member records are taken as they come."""
        return None

    @classmethod
    def from_options(cls, options: Options, *, clock: Callable[[], float]) -> NoAuthentication:
        """The authenticator (the options change nothing)."""
        return cls()
