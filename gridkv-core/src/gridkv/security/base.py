"""The authenticator interface every authentication plugin implements.

The messaging port (:mod:`gridkv.node.messaging`) asks the authenticator for a
:class:`Channel` to a peer before it sends there (:meth:`Authenticator.channel_to`, which may
first run a handshake through the ``exchange`` callable it is given), seals each outbound
frame with that channel and opens the answer with it. Each inbound frame goes to
:meth:`Authenticator.accept` first: a handshake message is answered there and then, and a
protected frame is opened and returned with the channel that opened it (whose ``peer_id``
names the authenticated sender), which then seals the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.transport.base import Handshake
    from gridkv.wire.fields import MemberRecord

__all__ = [
    "Authenticator",
    "AuthenticatorFactory",
    "Channel",
    "Exchange",
    "REFUSED",
    "RecordProofs",
    "UNKNOWN_SESSION",
]

#: The first byte of a refusal: an answer, not protected, to a frame the authenticator
#: refused (its reason follows in UTF-8). No protected frame or encoded message starts so.
REFUSED = 0xA4

#: The refusal reason that makes the sender set a new channel up and send again (the
#: receiver lost the one the frame was sealed on, as after a restart).
UNKNOWN_SESSION = "unknown session"

#: Sends a handshake message to the peer as a request; returns its answer.
Exchange = Callable[[bytes], Awaitable[bytes]]


class Channel(Protocol):
    """The protection of the frames exchanged with one peer."""

    @property
    def peer_id(self) -> str | None:
        """The peer's node id as authenticated, ``None`` when nothing is authenticated."""

    def seal(self, payload: bytes, answering: bytes = b"") -> bytes:
        """The frame that carries ``payload`` to the peer.

        :param answering: for an answer, the request frame it answers (an answer is bound
            to its request).
        """

    def open(self, frame: bytes, answering: bytes = b"") -> bytes:
        """The payload of a frame from the peer.

        :param answering: for an answer, the request frame this node sent.

        :raises AuthenticationError: the frame is not authentic (forged, altered, replayed).
        """


@runtime_checkable
class Authenticator(Protocol):
    """Proves this node's identity to its peers and checks theirs, frame by frame."""

    name: str

    def handshake(self, node_at: Callable[[str], str | None]) -> Handshake | None:
        """What a transport with connections runs first on each one, or ``None``.

        A transport that runs it protects its connections itself, and the frames it carries
        are not sealed again (:meth:`channel_to` and :meth:`accept` are then not used for
        them).

        :param node_at: the node id this node's view puts at an address (``None``: unknown):
            a dialled connection is for that node only.
        """

    def channel_ready(self, address: str) -> Channel | None:
        """The channel to ``address`` if it is set up (no waiting), else ``None``."""

    async def channel_to(
        self, address: str, exchange: Exchange, expected: str | None = None
    ) -> Channel:
        """The channel to the node at ``address``, set up first when there is none.

        :param exchange: sends a handshake message to ``address`` and returns the answer.
        :param expected: the node id this node's view puts at ``address`` (``None`` when it
            does not know, as for a seed): the handshake fails if another node answers.
        :raises AuthenticationError: the peer is not trusted, or refused this node.
        :raises PeerUnavailable: the handshake could not reach the peer.
        """

    def forget(self, address: str) -> None:
        """Drop the channel to ``address`` (the peer lost it: the next send sets a new one up)."""

    def accept(self, peer: str, frame: bytes) -> tuple[Channel | None, bytes]:
        """Take a frame from ``peer``.

        :returns: ``(channel, payload)`` for a protected frame; ``(None, answer)`` for a
            handshake message, whose answer goes back as it is.
        :raises AuthenticationError: refused; the message says why.
        """

    def rejections(self) -> Mapping[str, int]:
        """Frames refused so far, by reason."""

    def peer_keys(self) -> Mapping[str, bytes] | None:
        """The public key of each peer authenticated so far; ``None`` when keys are not used."""

    def record_proofs(self) -> RecordProofs | None:
        """What signs and checks member records; ``None`` when records are not signed."""


class RecordProofs(Protocol):
    """Signed member records: what makes a member's address, incarnation and key its own.

    With authentication on, every alive or left record carries a *proof*: the member's own
    signature over it, with its public key and its trust-root credential, so any node can
    check it, even for a member it has never spoken to.
    """

    @property
    def signer(self) -> bytes:
        """The public key proofs are made with now (it changes when the key rotates)."""

    def prove(self, node_id: str, address: str, incarnation: int, state: int) -> bytes:
        """This node's proof of its own record."""

    def check(self, record: MemberRecord) -> bool:
        """Whether ``record.proof`` is its member's signature of it, under the trust root."""


class AuthenticatorFactory(Protocol):
    """Builds a node's authenticator; registered through ``gridkv_register_authenticators``."""

    def __call__(self, options: Options, *, clock: Callable[[], float]) -> Authenticator:
        """Return the authenticator ``options`` describe; ``clock`` is the node's wall clock."""
