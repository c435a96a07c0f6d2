"""The inbound router: a frame from a peer in, the component that handles it, the answer out.

:meth:`Router.on_frame` is the transport's handler. It checks and decodes the frame through the
messaging port (the security layer), refuses data a sender may not give yet, hands the message
to the membership protocol, the coordinator, anti-entropy or handoff, and encodes the answer.
Most messages are answered at once; a read that has to ask former replicas answers with an
awaitable (see :data:`gridkv.transport.Handler`). Every failure becomes an error answer, and the
log lines about bad frames and failing handlers are rate-limited.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gridkv.base.errors import AuthenticationError, GridKVError, ProtocolError
from gridkv.base.log import LOGGER_NAME, RateLimitedLog
from gridkv.node.messaging import refusal
from gridkv.wire.messages import (
    MEMBERSHIP_TYPES,
    BucketSync,
    DigestSync,
    ErrorReply,
    GetManyRequest,
    GetRequest,
    HandoffDone,
    Invalidate,
    KeysRequest,
    KeySync,
    Message,
    MutateRequest,
    Ping,
    Pong,
    ReplicateBatch,
    StatusReply,
    StatusRequest,
    WatchedGetRequest,
)

if TYPE_CHECKING:
    from gridkv.base.hlc import HLC
    from gridkv.cluster.antientropy.driver import AntiEntropy
    from gridkv.cluster.handoff.driver import Handoff
    from gridkv.cluster.keyspace import Keyspace
    from gridkv.cluster.membership.base import Membership
    from gridkv.cluster.replication.coordinator import Coordinator
    from gridkv.cluster.replication.mutations import Mutator
    from gridkv.node.messaging import MessagingPort
    from gridkv.security.base import Channel

__all__ = ["Router"]

log = logging.getLogger(LOGGER_NAME)

#: Messages that carry or compare data: refused from a sender this node holds dead, which has
#: to learn that (and refute) before it may write here. (A member that left gracefully hands
#: its partitions over after announcing the leave, so "left" is accepted.)
_DATA_TYPES = (ReplicateBatch, DigestSync, BucketSync, KeySync, HandoffDone, MutateRequest)
#: Messages that push what a node already held (anti-entropy, handoff): refused also from a
#: sender this view does not know. A node back from a separation longer than dead_retention
#: (both sides forgot each other) first drops what it held from before, on its first contact
#: with this side (gridkv.cluster.membership.separation); until this side knows it again,
#: what it sends meanwhile (a round begun under its old view) is refused.
_BULK_TYPES = (DigestSync, BucketSync, KeySync, HandoffDone)


class Router:
    """Routes the frames a node receives to its components.

    :param node_id: this node's id (in answers and logs).
    :param messaging: decodes frames and encodes answers (the security layer).
    :param membership: the membership protocol (and the view data is checked against).
    :param coordinator: reads and replication batches.
    :param anti_entropy: digest, bucket and key comparisons.
    :param handoff: the end of a handoff.
    :param hlc: the clock a :class:`~gridkv.wire.messages.Pong` reports.
    :param mutator: atomic operations on keys this node is primary owner of.
    :param keyspace: listings of the keys this node holds.
    :param status: this node's figures, encoded (``gridkv status``).
    :param leaving: whether this node is closing; it then refuses every handoff and
        comparison at once (the giver turns to the other members), not after a time-out.
    """

    def __init__(
        self,
        node_id: str,
        messaging: MessagingPort,
        membership: Membership,
        coordinator: Coordinator,
        anti_entropy: AntiEntropy,
        handoff: Handoff,
        hlc: HLC,
        mutator: Mutator,
        keyspace: Keyspace,
        status: Callable[[], bytes],
        leaving: Callable[[], bool] = lambda: False,
    ) -> None:
        self.node_id = node_id
        self._messaging = messaging
        self._membership = membership
        self._coordinator = coordinator
        self._anti_entropy = anti_entropy
        self._handoff = handoff
        self._hlc = hlc
        self._mutator = mutator
        self._keyspace = keyspace
        self._status = status
        self._leaving = leaving
        self._errors = RateLimitedLog(log)
        #: Frames from peers that did not decode (each answered with a ProtocolError).
        self.malformed_frames = 0
        #: Frames the authenticator refused (each answered with a refusal).
        self.refused_frames = 0
        #: Authenticated messages that claimed another sender than their channel's peer.
        self.spoofed_senders = 0

    def on_frame(
        self, peer: str, frame: bytes, sender: str | None = None
    ) -> bytes | Awaitable[bytes | None] | None:
        """The transport's handler: authenticate, decode, dispatch, seal the answer.

        :param sender: the node id the transport authenticated the frame's connection as
            (the frame is then not sealed); ``None``: the authenticator checks the frame.
        """
        messaging = self._messaging
        channel: Channel | None = None
        if sender is None:
            try:
                channel, payload = messaging.accept(peer, frame)
            except AuthenticationError as exc:
                self.refused_frames += 1
                self._warn("refused frame", "refused a frame from a peer", peer, exc)
                return refusal(str(exc))
            if channel is None:
                return payload  # a handshake message's answer
            sender = channel.peer_id
        else:
            payload = frame
        try:
            message = messaging.decode(payload)
        except ProtocolError as exc:
            self.malformed_frames += 1
            self._warn("malformed frame", "dropped a malformed frame", peer, exc)
            return _sealed(channel, messaging.encode(ErrorReply("ProtocolError", str(exc))), frame)
        answer: Message | None
        try:
            claimed = getattr(message, "sender", None)
            if sender is not None and claimed is not None and claimed != sender:
                self.spoofed_senders += 1
                raise AuthenticationError(
                    f"a message from {sender!r} claims to come from {claimed!r:.80}"
                )
            refused = self._refuse_data(message) if isinstance(message, MutateRequest) else None
            if refused is not None:
                answer = refused
            elif isinstance(message, GetRequest | WatchedGetRequest | MutateRequest):
                got = (
                    self._mutator.on_mutate(message)
                    if isinstance(message, MutateRequest)
                    else self._coordinator.on_get(message)
                )
                if not isinstance(got, Message):
                    return self._answer_later(peer, channel, frame, message, got)
                answer = got
            else:
                answer = self._dispatch(peer, message)
        except Exception as exc:
            answer = self._error_reply(peer, message, exc)
        return None if answer is None else _sealed(channel, self._encode(answer), frame)

    def _encode(self, answer: Message) -> bytes:
        """``answer`` encoded, or the error saying why it cannot be (larger than a frame).

        The asker then hears at once rather than at its time-out.
        """
        try:
            return self._messaging.encode(answer)
        except GridKVError as exc:
            return self._messaging.encode(ErrorReply(type(exc).__name__, str(exc)[:2000]))

    async def _answer_later(
        self,
        peer: str,
        channel: Channel | None,
        request: bytes,
        message: Message,
        pending: Awaitable[Message],
    ) -> bytes | None:
        try:
            answer: Message = await pending
        except Exception as exc:
            answer = self._error_reply(peer, message, exc)
        return _sealed(channel, self._encode(answer), request)

    def _warn(self, kind: str, what: str, peer: str, exc: Exception) -> None:
        """Log (rate-limited by ``kind``) that a frame from ``peer`` was refused or dropped."""
        self._errors.log(
            logging.WARNING, kind, what, peer=peer, error=str(exc), node_id=self.node_id
        )

    def _error_reply(self, peer: str, message: Message, exc: Exception) -> ErrorReply:
        if isinstance(exc, GridKVError):
            return ErrorReply(type(exc).__name__, str(exc))
        # A bug here must not leave the peer waiting in silence.
        kind = type(message).__name__
        self._errors.log(
            logging.ERROR,
            f"handler failed: {kind}",
            f"failed to handle a {kind} message: {type(exc).__name__}: {exc}",
            exc_info=exc,
            peer=peer,
            node_id=self.node_id,
        )
        return ErrorReply("InternalError", f"{type(exc).__name__}: {exc}")

    def _refuse_data(
        self,
        message: ReplicateBatch | DigestSync | BucketSync | KeySync | HandoffDone | MutateRequest,
    ) -> ErrorReply | None:
        """The refusal of data from a sender that may not give it yet, or ``None``."""
        sender = message.sender
        if isinstance(message, _BULK_TYPES) and self._leaving():
            return ErrorReply(
                "ShuttingDown", f"node {self.node_id!r} is leaving; it takes no partitions"
            )
        state = self._membership.state_of(sender)
        if state == "dead":
            why = "dead; it must rejoin (refute) before its data is taken"
        elif isinstance(message, _BULK_TYPES) and state is None:
            why = "unknown; it must join before it pushes what it holds"
        else:
            return None
        return ErrorReply("PeerUnavailable", f"node {self.node_id!r} holds {sender!r} {why}")

    def _dispatch(self, peer: str, message: Message) -> Message | None:
        if isinstance(message, MEMBERSHIP_TYPES):
            return self._membership.handle(peer, message)
        if isinstance(message, _DATA_TYPES):
            refused = self._refuse_data(message)
            if refused is not None:
                return refused
        if isinstance(message, ReplicateBatch):
            return self._coordinator.on_batch(message)
        if isinstance(message, DigestSync):
            return self._anti_entropy.on_digests(message)
        if isinstance(message, BucketSync):
            return self._anti_entropy.on_buckets(message)
        if isinstance(message, KeySync):
            return self._anti_entropy.on_keys(message)
        if isinstance(message, HandoffDone):
            return self._handoff.on_done(message)
        if isinstance(message, KeysRequest):
            return self._keyspace.on_keys(message)
        if isinstance(message, GetManyRequest):
            return self._coordinator.on_get_many(message)
        if isinstance(message, Invalidate):
            self._coordinator.on_invalidate(message)
            return None
        if isinstance(message, StatusRequest):
            return StatusReply(self._status())
        if isinstance(message, Ping):
            return Pong(message.seq, self.node_id, self._hlc.now())
        return ErrorReply(
            "ProtocolError", f"{type(message).__name__} is not handled by this node version"
        )


def _sealed(channel: Channel | None, answer: bytes, request: bytes) -> bytes:
    """``answer`` sealed for ``request``'s channel (as it is when the transport protects it)."""
    return answer if channel is None else channel.seal(answer, request)
