"""The messaging port: the only path between the cluster components and the transport.

Outbound, a message is encoded, sealed on the node's authenticator's channel to the address
(the security layer; a handshake runs first when there is none) and handed to the transport;
an answer is opened on the same channel and decoded. Inbound, the router hands each frame to
:meth:`MessagingPort.accept` before it decodes anything. A transport that runs the
authenticator's handshake on its connections (:attr:`MessagingPort.guarded`) protects the
frames itself, and they pass here as they are. Cluster components see only
:meth:`MessagingPort.request` and :meth:`MessagingPort.send` (the
:class:`~gridkv.cluster.context.Messaging` protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gridkv.base.errors import AuthenticationError, PeerUnavailable
from gridkv.security.base import REFUSED, UNKNOWN_SESSION
from gridkv.wire import codec
from gridkv.wire.messages import ErrorReply, Message

if TYPE_CHECKING:
    from gridkv.security.base import Authenticator, Channel
    from gridkv.transport.base import Transport

__all__ = ["MessagingPort", "refusal"]

_REFUSED = bytes([REFUSED])


def refusal(reason: str) -> bytes:
    """The unprotected answer to a frame the authenticator refused."""
    return _REFUSED + reason.encode()[:200]


class MessagingPort:
    """Messages to and from other nodes over ``transport``, through ``authenticator``.

    :param transport: the node's transport.
    :param authenticator: the node's authenticator.
    :param max_frame_bytes: the largest encoded message sent or accepted.
    """

    def __init__(
        self, transport: Transport, authenticator: Authenticator, max_frame_bytes: int
    ) -> None:
        self.transport = transport
        self.authenticator = authenticator
        self._max = max_frame_bytes
        #: The node id this node's view puts at an address (``None``: unknown); the node
        #: sets it once its membership exists.
        self.node_at: Callable[[str], str | None] = lambda address: None
        #: Whether the transport authenticates and protects its connections itself (it runs
        #: the authenticator's handshake); the node sets it once the transport has started.
        self.guarded = False

    def encode(self, message: Message) -> bytes:
        """``message`` encoded (not yet sealed)."""
        return codec.encode(message, self._max)

    def decode(self, payload: bytes) -> Message:
        """The message an opened payload carries.

        :raises ProtocolError: not a valid message.
        """
        return codec.decode(payload, self._max)

    def accept(self, peer: str, frame: bytes) -> tuple[Channel | None, bytes]:
        """An inbound frame through the authenticator (see ``Authenticator.accept``).

        :raises AuthenticationError: refused.
        """
        return self.authenticator.accept(peer, frame)

    async def _channel(self, address: str, timeout: float | None) -> Channel:
        async def exchange(hello: bytes) -> bytes:
            return await self.transport.request(address, hello, timeout)

        return await self.authenticator.channel_to(address, exchange, self.node_at(address))

    async def request(
        self, address: str, message: Message, timeout: float | None = None
    ) -> Message:
        """Send ``message`` to ``address`` and return the decoded answer.

        :raises PeerUnavailable: unreachable, or the peer answered with an error.
        :raises PeerTimeout: no answer in time.
        :raises ProtocolError: the answer is malformed.
        :raises AuthenticationError: the peer is not trusted, or did not trust this node.
        """
        payload = self.encode(message)
        if self.guarded:
            # The connection is bound to the node the view puts at the address (the
            # handshake's hello is meant for it), and its records to that connection.
            reply = self.decode(await self.transport.request(address, payload, timeout))
            if isinstance(reply, ErrorReply):
                raise PeerUnavailable(f"{address!r} answered {reply.code}: {reply.message}")
            claimed = getattr(reply, "sender", None)
            expected = self.node_at(address) if claimed is not None else None
            if expected is not None and claimed != expected:
                raise AuthenticationError(
                    f"an answer from {address!r}, where {expected!r} is, claims to come from "
                    f"{claimed!r:.80}"
                )
            return reply
        for attempt in (1, 2):
            channel = self.authenticator.channel_ready(address) or await self._channel(
                address, timeout
            )
            sent = channel.seal(payload)
            answer = await self.transport.request(address, sent, timeout)
            if answer[:1] == _REFUSED:
                reason = answer[1:].decode("utf-8", "replace")
                if reason == UNKNOWN_SESSION and attempt == 1:
                    # The peer lost the session (a restart): set a new one up, send again.
                    self.authenticator.forget(address)
                    continue
                raise AuthenticationError(f"{address!r} refused the message: {reason}")
            break
        reply = self.decode(channel.open(answer, sent))
        if isinstance(reply, ErrorReply):
            raise PeerUnavailable(f"{address!r} answered {reply.code}: {reply.message}")
        claimed = getattr(reply, "sender", None)
        if channel.peer_id is not None and claimed is not None and claimed != channel.peer_id:
            raise AuthenticationError(
                f"an answer from {channel.peer_id!r} claims to come from {claimed!r:.80}"
            )
        return reply

    async def send(self, address: str, message: Message) -> None:
        """Send ``message`` one way to ``address`` (no answer, delivery not confirmed).

        :raises PeerUnavailable: the peer is known to be unreachable.
        :raises AuthenticationError: no session could be set up with the peer.
        """
        payload = self.encode(message)
        if self.guarded:
            await self.transport.send(address, payload)
            return
        channel = self.authenticator.channel_ready(address) or await self._channel(address, None)
        await self.transport.send(address, channel.seal(payload))
