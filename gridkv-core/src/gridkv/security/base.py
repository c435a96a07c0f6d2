"""The authenticator interface every authentication plugin implements."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.transport.base import Handshake

__all__ = ["Authenticator", "AuthenticatorFactory"]


@runtime_checkable
class Authenticator(Protocol):
    """Protects the frames one node exchanges with the others.

    :meth:`wrap` turns an encoded message into the frame sent (signed, sealed, or as it is);
    :meth:`unwrap` checks a received frame and returns the encoded message inside. A
    connection-oriented transport also runs :attr:`handshake` on every new connection.
    """

    name: str

    @property
    def handshake(self) -> Handshake | None:
        """What a transport with connections runs first on each one, or ``None``."""

    def wrap(self, payload: bytes) -> bytes:
        """The frame that carries ``payload`` (an encoded message) to a peer."""

    def unwrap(self, peer: str, payload: bytes) -> bytes:
        """The encoded message inside a frame received from ``peer``.

        :raises AuthenticationError: the frame is not authentic (forged, replayed, altered).
        """


class AuthenticatorFactory(Protocol):
    """Builds a node's authenticator; registered through ``gridkv_register_authenticators``."""

    def __call__(self, options: Options) -> Authenticator:
        """Return the authenticator ``options`` describe."""
