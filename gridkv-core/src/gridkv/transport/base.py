"""The transport interface: how a node sends bytes to another node and answers requests.

A transport moves opaque frames between addresses; it knows nothing of messages, keys or
membership. It offers two ways to send: :meth:`Transport.request` (a frame out, one frame back,
many in flight at once) and :meth:`Transport.send` (one-way, no answer, may be lost, the way a
UDP gossip packet is). Inbound frames go to the node's :data:`Handler`; for a request, what the
handler returns is the answer.

Transports raise only GridKV errors: :class:`~gridkv.base.errors.PeerUnavailable` when the peer
cannot be reached, :class:`~gridkv.base.errors.PeerTimeout` when it does not answer in time,
:class:`~gridkv.base.errors.ProtocolError` for a frame over the limit, and
:class:`~gridkv.base.errors.ShuttingDown` after :meth:`Transport.close`.

Authentication is layered above this interface: the security layer wraps every frame before
:meth:`~Transport.request` / :meth:`~Transport.send` and unwraps it in the handler, so it covers
connection-oriented and connectionless sends alike. A transport that opens connections may
take that work over: given a :class:`Handshake` in :meth:`Transport.start`, it authenticates
each new connection with it (the dialler's hello, the acceptor's reply), and from then on
protects whatever it writes on the connection with the :class:`ConnectionGuard` the handshake
gave, many frames under one tag. It then hands each inbound frame to the handler with the node
id the connection was authenticated as, and the security layer leaves those frames alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gridkv.base.errors import AuthenticationError, ProtocolError, ShuttingDown

if TYPE_CHECKING:
    from gridkv.base.options import Options

__all__ = [
    "ConnectionGuard",
    "Handler",
    "Handshake",
    "Transport",
    "TransportFactory",
    "TransportStats",
    "TransportCounters",
    "check_outbound",
]

#: ``handler(peer_address, frame, sender)`` gets each inbound frame; for a request its return
#: value is the answer (``None`` answers with nothing, and the requester times out). A handler
#: that can answer at once returns the answer itself; one that has to wait returns an
#: awaitable of it (an ``async def`` handler does), which the transport runs as a task.
#: Answering at once spares a task per frame, the largest cost of a small request. ``sender``
#: is the node id the frame's connection was authenticated as by the transport's
#: :class:`Handshake`, ``None`` when the transport authenticated nothing (the security layer
#: then checks the frame itself).
Handler = Callable[[str, bytes, "str | None"], "bytes | Awaitable[bytes | None] | None"]


class ConnectionGuard(Protocol):
    """The protection of one connection once its handshake is done, in both directions.

    What one side writes in a turn of its event loop is sealed as one *record*; records are
    opened in the order they were sealed, each exactly once (the stream's order is part of
    what is checked), so a record altered, dropped, replayed or moved is refused.
    """

    @property
    def peer_id(self) -> str:
        """The node id the peer was authenticated as."""

    @property
    def expired(self) -> bool:
        """Whether the connection should carry no new requests.

        It is too old, or the keys it was set up with were rotated away: the dialler
        replaces it.
        """

    def seal(self, data: bytes) -> bytes:
        """The next record to the peer, carrying ``data``."""

    def open(self, record: bytes) -> bytes:
        """The data of the next record from the peer.

        :raises AuthenticationError: the record is not the peer's next one, unaltered.
        """


@runtime_checkable
class Handshake(Protocol):
    """What a connection-oriented transport runs when a connection opens.

    On a TLS connection whose peer presented a certificate, :meth:`tls_peer` may vouch for the
    peer at once. Otherwise the dialler sends :meth:`initiate`'s hello first; the acceptor
    answers it with :meth:`respond`'s reply, or with its refusal and closes; the dialler checks
    the reply with :meth:`complete`. No other frame passes before; a connection whose hello or
    reply does not come within the dial time-out is closed. Each side then protects the
    connection with the :class:`ConnectionGuard` it got.
    """

    def initiate(self, address: str) -> tuple[object, bytes]:
        """The dialler's hello to ``address``, and what :meth:`complete` needs of it."""

    def respond(self, peer_address: str, hello: bytes) -> tuple[ConnectionGuard, bytes]:
        """The acceptor's check of a hello: its guard, and the reply to send.

        :raises AuthenticationError: refused (the message is the refusal the dialler gets).
        """

    def refusal(self, error: AuthenticationError) -> bytes:
        """What the acceptor sends back instead of a reply when :meth:`respond` refused."""

    def complete(self, address: str, pending: object, reply: bytes) -> ConnectionGuard:
        """The dialler's check of the reply (or refusal) to its hello.

        :raises AuthenticationError: refused by the peer, or the reply is not authentic.
        """

    def binds_certificate(self, certificate: bytes) -> bool:
        """Whether :meth:`tls_peer` would vouch for a peer presenting ``certificate`` (DER).

        True when this handshake's trust root is a CA that issued it, naming a node id. A
        transport whose every connection is mutual TLS, and whose own TLS certificate binds
        so, may take the handshake over with no hellos at all (its peers, whose certificates
        come from the same CA, are vouched for); otherwise it leaves the frames to the
        security layer.
        """

    def tls_peer(self, certificate: bytes, address: str) -> ConnectionGuard | None:
        """For a connection mutual TLS protects, the peer's ``certificate`` (DER) presented.

        ``address`` is the address dialled (``""`` on the accepting side): the certificate
        must name the node expected there, when that is known.

        When the certificate binds a node id under this handshake's own trust root, TLS has
        already authenticated the peer and protects what it sends: the guard returned takes
        the hellos' place, and passes records as they are (nothing is protected twice).
        ``None``: the hellos run, inside TLS.

        :raises AuthenticationError: the certificate names another node than the one expected
            at ``address``.
        """


@dataclass(frozen=True, slots=True)
class TransportStats:
    """Counters of a transport.

    :ivar type: the transport's plugin name.
    :ivar local_address: the address peers reach this node at.
    :ivar bind_address: the address listened on.
    :ivar requests_sent: requests sent.
    :ivar requests_received: requests answered.
    :ivar messages_sent: one-way frames sent.
    :ivar messages_received: one-way frames received.
    :ivar bytes_sent: payload bytes sent.
    :ivar bytes_received: payload bytes received.
    :ivar errors: failed sends and requests (unreachable, timed out, refused frames).
    :ivar connections: open connections (0 for connectionless transports).
    :ivar slow_reader_cuts: connections cut because the peer did not read what was sent to
        it (more than ``network.max_output_buffer_bytes`` queued, or nothing taken for
        ``network.write_timeout`` while data waited).
    :ivar inbound_full_cuts: connections cut because their unfinished frame would have
        passed the node's ``network.max_inbound_buffer_bytes``.
    :ivar slow_frame_cuts: connections cut because a frame did not complete within
        ``network.read_timeout`` of its first byte.
    :ivar partial_bytes: bytes of unfinished inbound frames held right now.
    """

    type: str
    local_address: str
    bind_address: str
    requests_sent: int = 0
    requests_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    errors: int = 0
    connections: int = 0
    slow_reader_cuts: int = 0
    inbound_full_cuts: int = 0
    slow_frame_cuts: int = 0
    partial_bytes: int = 0


class TransportCounters:
    """The counters every transport keeps; :meth:`snapshot` turns them into stats."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "errors",
        "inbound_full_cuts",
        "messages_received",
        "messages_sent",
        "requests_received",
        "requests_sent",
        "slow_frame_cuts",
        "slow_reader_cuts",
    )

    def __init__(self) -> None:
        self.requests_sent = 0
        self.requests_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.errors = 0
        self.slow_reader_cuts = 0
        self.inbound_full_cuts = 0
        self.slow_frame_cuts = 0

    def snapshot(
        self,
        kind: str,
        local_address: str,
        bind_address: str,
        connections: int = 0,
        partial_bytes: int = 0,
    ) -> TransportStats:
        """The counters as :class:`TransportStats`, with the gauges the transport passes."""
        return TransportStats(
            type=kind,
            local_address=local_address,
            bind_address=bind_address,
            requests_sent=self.requests_sent,
            requests_received=self.requests_received,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            errors=self.errors,
            connections=connections,
            slow_reader_cuts=self.slow_reader_cuts,
            inbound_full_cuts=self.inbound_full_cuts,
            slow_frame_cuts=self.slow_frame_cuts,
            partial_bytes=partial_bytes,
        )


def check_outbound(
    kind: str,
    local_address: str,
    closed: bool,
    address: str,
    size: int,
    limit: int,
    counters: TransportCounters,
) -> None:
    """The checks every transport makes before sending a frame of ``size`` bytes.

    :raises ShuttingDown: the transport is closed.
    :raises ProtocolError: the frame is larger than ``limit`` (network.max_frame_bytes).
    """
    if closed:
        raise ShuttingDown(f"{kind} transport {local_address!r} is closed")
    if size > limit:
        counters.errors += 1
        raise ProtocolError(
            f"frame of {size} bytes to {address!r} exceeds the limit of {limit} "
            "(network.max_frame_bytes)"
        )


@runtime_checkable
class Transport(Protocol):
    """What a node needs from a transport."""

    name: str

    @property
    def local_address(self) -> str:
        """The address peers reach this node at."""

    async def start(self, handler: Handler, handshake: Handshake | None = None) -> bool:
        """Start listening; inbound frames go to ``handler``.

        :param handshake: run on every new connection by transports that have connections;
            connectionless transports ignore it (frames are authenticated one by one above).
        :returns: whether the transport runs ``handshake``: every frame it carries is then
            authenticated and protected by it (with the sender's id given to ``handler``).
        """

    async def request(self, address: str, payload: bytes, timeout: float | None = None) -> bytes:
        """Send ``payload`` to ``address`` and return the answer.

        :param timeout: seconds to wait for the answer; ``None`` uses the configured default.
        :raises PeerUnavailable: the peer cannot be reached.
        :raises PeerTimeout: no answer in time.
        :raises ProtocolError: ``payload`` is larger than the frame limit.
        :raises ShuttingDown: the transport is closed.
        """

    async def send(self, address: str, payload: bytes) -> None:
        """Send ``payload`` one way; delivery is not confirmed.

        :raises PeerUnavailable: the peer is known to be unreachable right now.
        :raises ShuttingDown: the transport is closed.
        """

    async def close(self) -> None:
        """Stop listening and fail requests still waiting; idempotent."""

    def stats(self) -> TransportStats:
        """Current counters."""


class TransportFactory(Protocol):
    """Builds a transport for a node; registered through ``gridkv_register_transports``."""

    def __call__(self, options: Options) -> Transport:
        """Return a new, not yet started transport configured from ``options``."""
