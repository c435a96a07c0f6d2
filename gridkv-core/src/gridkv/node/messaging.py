"""The messaging port: the only path between the cluster components and the transport.

Outbound, a message is encoded, wrapped by the node's authenticator (the security layer) and
handed to the transport; inbound, a frame is unwrapped (checked) and decoded. Cluster
components see only :meth:`MessagingPort.request` and :meth:`MessagingPort.send` (the
:class:`~gridkv.cluster.context.Messaging` protocol).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gridkv.base.errors import PeerUnavailable
from gridkv.wire import codec
from gridkv.wire.messages import ErrorReply, Message

if TYPE_CHECKING:
    from gridkv.security.base import Authenticator
    from gridkv.transport.base import Transport

__all__ = ["MessagingPort"]


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

    def encode(self, message: Message) -> bytes:
        """The frame that carries ``message``: encoded, then wrapped."""
        return self.authenticator.wrap(codec.encode(message, self._max))

    def decode(self, peer: str, frame: bytes) -> Message:
        """The message a frame from ``peer`` carries: unwrapped (checked), then decoded.

        :raises ProtocolError: the frame is not a valid message.
        :raises AuthenticationError: the frame is not authentic.
        """
        return codec.decode(self.authenticator.unwrap(peer, frame), self._max)

    async def request(
        self, address: str, message: Message, timeout: float | None = None
    ) -> Message:
        """Send ``message`` to ``address`` and return the decoded answer.

        :raises PeerUnavailable: unreachable, or the peer answered with an error.
        :raises PeerTimeout: no answer in time.
        :raises ProtocolError: the answer is malformed.
        """
        answer = await self.transport.request(address, self.encode(message), timeout)
        reply = self.decode(address, answer)
        if isinstance(reply, ErrorReply):
            raise PeerUnavailable(f"{address!r} answered {reply.code}: {reply.message}")
        return reply

    async def send(self, address: str, message: Message) -> None:
        """Send ``message`` one way to ``address`` (no answer, delivery not confirmed).

        :raises PeerUnavailable: the peer is known to be unreachable.
        """
        await self.transport.send(address, self.encode(message))
