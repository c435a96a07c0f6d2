"""One QUIC connection (a *link*), either side, and the listener that accepts them.

How frames travel on a link:

* requests are GridKV stream frames (:mod:`gridkv.wire.framing`) with their request ids on
  *lanes*, long-lived bidirectional streams the dialler opens as requests pile up (one more
  whenever each has :data:`BUSY_LANE` in flight, up to ``max_lanes``); each answer comes back
  on its request's lane, matched by id, so many are in flight on a lane. A stream per request
  was measured first: aioquic walks every open stream on each transmission, and each lane
  with data costs a STREAM frame (and a delivery on the other side) in every packet;
* one-way frames go over one unidirectional stream per link, opened by the dialler at its
  first one-way frame and kept, in the order they were sent, as over the tcp transport's
  control lane.

Only the dialler opens streams; a stream the acceptor opens, more than :data:`MAX_LANES`, a
frame of the wrong kind for its stream, a frame over ``max_frame_bytes``, or a stream reset or
stopped cuts the link (counted). What a link writes in one loop turn is handed to aioquic once
per stream and leaves in one transmission, with the acknowledgements of what arrived in it.

aioquic paces what it sends (:class:`_Pacer`) at the granularity of the event loop's timers,
not below it: a pacing delay of microseconds, which its pacer asks for on a fast path, cannot
be kept by a loop whose timers and clock tick in milliseconds (uvloop's), and became a spin of
empty transmissions until the clock moved.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

from aioquic._buffer import Buffer
from aioquic.quic import events
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.packet import QuicErrorCode, QuicPacketType, pull_quic_header
from aioquic.quic.recovery import QuicPacketPacer
from cryptography.hazmat.primitives.serialization import Encoding
from gridkv.base.errors import (
    AuthenticationError,
    PeerTimeout,
    PeerUnavailable,
    ProtocolError,
)
from gridkv.transport.base import ConnectionGuard
from gridkv.transport.shared import TransportState
from gridkv.wire.framing import HEAD, INNER, ONE_WAY, REQUEST, RESPONSE, Frame, FrameReader, head

from gridkv_transport_quic._tls import check_dialler

if TYPE_CHECKING:
    from aioquic.quic.configuration import QuicConfiguration

__all__ = ["Link", "Listener", "Shared"]

#: QUIC application error codes this transport closes links and streams with.
APP_ERROR = 0x1
#: The smallest datagram that may open a connection (RFC 9000, section 14.1).
_SMALLEST_INITIAL = 1200
#: Requests in flight on each lane before the dialler opens another lane. Each lane with data
#: costs a STREAM frame in every packet (and its delivery on the other side): 32 rather than
#: 16 took 14% off the CPU per round trip with 50 requests in flight (docs/benchmarks.md).
BUSY_LANE = 32
#: Streams a dialler may have open towards the acceptor (its lanes and its one-way stream).
MAX_LANES = 64
#: Awaitable answers (handlers that could not answer at once) running for one link; past it,
#: the link's further frames wait (within the inbound budget) until one finishes.
MAX_ANSWERS_IN_PROGRESS = 256
#: What a frame held back costs in the inbound budget besides its body (its header and the
#: objects that hold it), so frames with empty bodies are not free.
FRAME_COST = 96
#: Links accepted at once whose handshake is not done (each holds a TLS state); more Initial
#: packets are dropped until some finish or time out.
MAX_HALF_OPEN = 256
#: Seconds: the shortest pacing delay (:class:`_Pacer`), the resolution of uvloop's clock
#: and timers.
PACING_GRANULARITY = 0.001


class _Pacer(QuicPacketPacer):
    """aioquic's pacer, at the granularity of the event loop's timers.

    Its bucket holds at least :data:`PACING_GRANULARITY` of sending at the pacing rate (the
    congestion window over the round-trip time), and a delay it asks for is at least that
    long. Where the round trip is shorter than that (a LAN), the congestion window alone
    bounds a burst; on a longer one, sending is spread over the round trip in steps of it.
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        self.bucket_max = max(self.bucket_max, PACING_GRANULARITY)

    def next_send_time(self, now: float) -> float | None:  # type: ignore[override]
        at: float | None = super().next_send_time(now)
        return None if at is None else max(at, now + PACING_GRANULARITY)


class Shared(TransportState):
    """What one quic transport's listener and links have in common.

    The limits, counters, handler, inbound budget and answers running of
    :class:`~gridkv.transport.shared.TransportState`; the handshake is the authenticator's
    only when it binds certificates to node ids. Besides: the CA file dialler certificates
    must chain to, and every link open.

    :param ca_file: the CA file (``network.ssl.ca_file``).
    """

    __slots__ = ("ca_file", "links")

    def __init__(
        self,
        address: str,
        *,
        dial_timeout: float,
        read_timeout: float,
        write_timeout: float,
        max_frame_bytes: int,
        max_output_buffer_bytes: int,
        max_inbound_buffer_bytes: int,
        ca_file: str,
    ) -> None:
        super().__init__(
            address,
            dial_timeout=dial_timeout,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            max_frame_bytes=max_frame_bytes,
            max_output_buffer_bytes=max_output_buffer_bytes,
            max_inbound_buffer_bytes=max_inbound_buffer_bytes,
        )
        self.ca_file = ca_file
        #: Every link open, both directions.
        self.links: set[Link] = set()


class Link(asyncio.DatagramProtocol):
    """One QUIC connection.

    :param shared: the transport's shared state.
    :param quic: aioquic's connection state.
    :param peer: the address dialled (``host:port``), or the dialler's source address.
    :param dialled: this side dialled (it opens the streams).
    :param send: how datagrams leave (the dialler's own socket, or the listener's).
    :param max_lanes: the dialler's request streams at most.
    """

    def __init__(
        self,
        shared: Shared,
        quic: QuicConnection,
        peer: str,
        *,
        dialled: bool,
        send: Callable[[bytes, NetworkAddress], None] | None = None,
        max_lanes: int = 4,
    ) -> None:
        self.shared = shared
        self.quic = quic
        # Acknowledge in the transmission that ends the loop turn, not 1 ms later by a timer
        # (aioquic's default delay): the peer's congestion window waits for acknowledgements,
        # and a delay per round of them caps the request rate of a link.
        quic._ack_delay = 0.0
        quic._loss._pacer = _Pacer(max_datagram_size=quic._max_datagram_size)
        self.peer = peer
        self.dialled = dialled
        self._loop = asyncio.get_running_loop()
        self._send = send
        self._udp: asyncio.DatagramTransport | None = None
        self.remote: NetworkAddress | None = None
        #: Resolved when the handshake is done and the peer checked (and bound).
        self.ready: asyncio.Future[None] = self._loop.create_future()
        #: Resolved when the link is gone.
        self.closed: asyncio.Future[None] = self._loop.create_future()
        #: request id -> the answer awaited.
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self._ids = 0
        #: The dialler's lanes: bidirectional streams carrying requests one way, answers back.
        self._lanes: list[int] = []
        self._max_lanes = max(1, min(max_lanes, MAX_LANES - 1))  # one more: the one-way one
        #: stream id -> the frames coming in on it (lanes, and the one-way stream).
        self._readers: dict[int, FrameReader] = {}
        #: Bytes this link holds in the node's inbound budget.
        self._held = 0
        self._one_way_out: int | None = None
        #: stream id -> frames written this loop turn, handed to aioquic at its end.
        self._out: dict[int, list[bytes]] = {}
        self._out_bytes = 0
        #: Stream bytes aioquic delivered, and those it holds past holes (charged to the
        #: budget, since when).
        self._delivered = 0
        self._gap = 0
        self._gap_since: float | None = None
        #: Closed by the acceptor before it sent anything: it refused this node.
        self.refused = False
        #: Awaitable answers running, and the frames held back meanwhile beyond the limit.
        self._answering = 0
        self._backlog: deque[tuple[int, int, list[Frame], int]] = deque()
        self.guard: ConnectionGuard | None = None
        self.sender: str | None = None
        #: The handshake is done and the peer's certificate checked (and bound).
        self._checked = False
        self.failure: Exception | None = None
        self._gone = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        #: aioquic's timer is being handled and the connection was open: what terminates it
        #: now is the idle time-out.
        self._idle_expiry = False
        self._soon: asyncio.Handle | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._watch_at = 0.0
        #: Bytes handed to aioquic and not yet known to be taken by the peer (a bound).
        self._queued = 0
        #: Bytes handed to aioquic in all, and how many of them the peer had acknowledged
        #: at the last check (when that last grew: progress).
        self._written = 0
        self._acked = 0
        self._progress_at = self._loop.time()
        #: Loop time of the last packet received (keep-alive and idle checks).
        self.heard = self._loop.time()
        #: Connection ids the listener routes to this link.
        self.cids: set[bytes] = set()
        self.on_cid: Callable[[Link, bytes, bool], None] = lambda link, cid, issued: None
        #: Told at once when the link is gone, before what waits on it learns it.
        self.on_gone: Callable[[Link], None] = lambda link: None
        shared.links.add(self)

    # -- datagrams in and out ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._udp = cast(asyncio.DatagramTransport, transport)
        peername = transport.get_extra_info("peername")
        if peername:  # a dialler's connected socket: the peer's address, resolved
            self.remote = tuple(peername)

    def error_received(self, exc: Exception) -> None:
        # A dialler's own socket is connected: ICMP "port unreachable" arrives here, and
        # means nothing listens at the peer's port any more (it was killed, or never ran).
        if not self.ready.done():
            self._fail(PeerUnavailable(f"cannot connect to {self.peer!r}: {exc}"))
        elif isinstance(exc, ConnectionRefusedError):
            self._fail(PeerUnavailable(f"{self.peer!r} is gone: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(PeerUnavailable(f"connection to {self.peer!r} lost"))

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        if self._gone:
            return
        self.heard = now = self._loop.time()
        quic = self.quic
        quic.receive_datagram(data, addr, now)
        self._events()
        if quic._local_max_data.used - self._delivered != self._gap:
            self._count_gaps(now)
        # What the datagrams of this loop turn call for (acknowledgements, answers) leaves
        # together, at its end.
        if self._soon is None and not self._gone:
            self._soon = self._loop.call_soon(self.transmit)

    def _count_gaps(self, now: float) -> None:
        """Charge what aioquic holds and has not delivered to the inbound budget.

        Stream data that arrived past a hole waits in aioquic's buffers (which allocate the
        hole too) until the hole is filled: it counts in the budget, and a hole not filled
        within ``read_timeout`` cuts the link, as an unfinished frame does.
        """
        if self._gone:
            return
        gap = self.quic._local_max_data.used - self._delivered
        if gap == self._gap:
            return
        if not self._hold(gap - self._gap):
            return
        self._gap = gap
        if not gap:
            self._gap_since = None
        elif self._gap_since is None:
            self._gap_since = now
            self._watch_later(self.shared.read_timeout)

    def receive(self, data: bytes, addr: NetworkAddress) -> int:
        """Take a datagram in and answer it at once; returns the datagrams sent."""
        if self._gone:
            return 0
        self.heard = now = self._loop.time()
        self.quic.receive_datagram(data, addr, now)
        self._events()
        return self.transmit()

    def connect(self, addr: NetworkAddress) -> None:
        """Start the handshake (the dialler)."""
        self.quic.connect(addr, now=self._loop.time())
        self.transmit()
        self._watch_later(self.shared.dial_timeout)

    def soon(self) -> None:
        """Transmit at the end of this loop turn (what is written meanwhile goes along)."""
        if self._soon is None and not self._gone:
            self._soon = self._loop.call_soon(self.transmit)

    def transmit(self) -> int:
        """Send what aioquic has to send; arm its timer. Returns the datagrams sent."""
        self._soon = None
        if self._gone:
            return 0
        quic = self.quic
        if self._out:
            self._hand_over()
        send = self._send
        datagrams = quic.datagrams_to_send(now=self._loop.time())
        if send is None:
            udp = self._udp
            if udp is None:
                return 0
            for data, _ in datagrams:
                udp.sendto(data)
        else:
            for data, addr in datagrams:
                send(data, addr)
        timer_at = quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            self._timer = self._loop.call_at(timer_at, self._on_timer)
        self._timer_at = timer_at
        return len(datagrams)

    def _on_timer(self) -> None:
        self._timer = None
        now = max(self._timer_at or 0.0, self._loop.time())
        self._timer_at = None
        quic = self.quic
        # Not closing yet: a ConnectionTerminated out of this timer is the idle time-out.
        self._idle_expiry = quic._close_event is None
        quic.handle_timer(now=now)
        self._events()
        self._idle_expiry = False
        self.transmit()

    # -- events ------------------------------------------------------------------------

    def _events(self) -> None:
        quic = self.quic
        event = quic.next_event()
        while event is not None:
            if isinstance(event, events.StreamDataReceived):
                self._delivered += len(event.data)
                self._stream_data(event.stream_id, event.data, event.end_stream)
            elif isinstance(event, events.HandshakeCompleted):
                self._handshake_done()
            elif isinstance(event, (events.StreamReset, events.StopSendingReceived)):
                # Neither side of GridKV resets a stream: its frames would be lost with it.
                self._cut(PeerUnavailable(f"{self.peer!r} reset stream {event.stream_id}"))
                return
            elif isinstance(event, events.ConnectionTerminated):
                reason = event.reason_phrase or f"QUIC error {event.error_code:#x}"
                if self._idle_expiry and self._checked:
                    idle = self.quic.configuration.idle_timeout
                    error = PeerUnavailable(
                        f"{self.peer!r} went silent: no packet within the QUIC idle "
                        f"time-out ({idle:g}s)"
                    )
                elif self.ready.done() and (self._delivered or not self.dialled):
                    error = PeerUnavailable(f"{self.peer!r} closed the connection: {reason}")
                elif self.ready.done():  # the acceptor refused this node's certificate
                    self.refused = True
                    error = PeerUnavailable(f"cannot connect to {self.peer!r}: {reason}")
                else:  # either side's TLS refused the other (or the ALPN)
                    error = PeerUnavailable(
                        f"cannot connect to {self.peer!r}: the handshake failed ({reason})"
                    )
                self._fail(error)
                return
            elif isinstance(event, events.ConnectionIdIssued):
                self.on_cid(self, event.connection_id, True)
            elif isinstance(event, events.ConnectionIdRetired):
                self.on_cid(self, event.connection_id, False)
            if self._gone:
                return
            event = quic.next_event()

    def _handshake_done(self) -> None:
        """Check the peer (the acceptor checks the dialler's chain), bind it to its node id."""
        shared = self.shared
        tls = self.quic.tls
        certificate = tls._peer_certificate
        try:
            if not self.dialled:
                check_dialler(certificate, tls._peer_certificate_chain, shared.ca_file)
            handshake = shared.handshake
            if handshake is not None:
                assert certificate is not None  # the dialler's check, aioquic's on this side
                der = certificate.public_bytes(Encoding.DER)
                guard = handshake.tls_peer(der, self.peer if self.dialled else "")
                if guard is None:
                    raise AuthenticationError(
                        f"{self.peer!r} presented a certificate that names no node under this "
                        "node's trust root (auth.ca_file must be the CA of network.ssl)"
                    )
                self.guard = guard
                self.sender = guard.peer_id
        except AuthenticationError as exc:
            if shared.handshake is not None:
                shared.handshake.refusal(exc)  # counted with the authenticator's refusals
            shared.counters.errors += 1
            self.failure = PeerUnavailable(f"cannot connect to {self.peer!r}: {exc}")
            self.close(str(exc))
            return
        self._checked = True
        if not self.ready.done():
            self.ready.set_result(None)
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _stream_data(self, stream_id: int, data: bytes, end: bool) -> None:
        """Bytes of a lane (a bidirectional stream) or of the one-way stream arrived."""
        kind = stream_id & 3  # 0: the dialler's bidirectional streams, 2: its one-way one
        if (kind and (self.dialled or kind != 2)) or not self._checked:
            # Streams are the dialler's alone, once the peer is checked.
            self._cut(PeerUnavailable(f"{self.peer!r} opened a stream it may not open"))
            return
        shared = self.shared
        reader = self._readers.get(stream_id)
        if reader is None:
            if (kind and any(s & 3 for s in self._readers)) or len(self._readers) >= MAX_LANES:
                self._cut(PeerUnavailable(f"{self.peer!r} opened more streams than it may"))
                return
            reader = self._readers[stream_id] = FrameReader(shared.max_frame_bytes)
        before = reader.buffered
        try:
            frames = reader.feed(data, self.heard) if data else []
        except ProtocolError as exc:
            self._cut(PeerUnavailable(f"{self.peer!r} broke the frame format: {exc}"))
            return
        buffered = reader.buffered
        if buffered != before and not self._hold(buffered - before):
            return
        if buffered:
            self._watch_later(shared.read_timeout)
        if frames:
            expected = ONE_WAY if kind else (RESPONSE if self.dialled else REQUEST)
            if self._answering >= MAX_ANSWERS_IN_PROGRESS or self._backlog:
                self._defer(stream_id, expected, frames)
            else:
                self._frames(stream_id, expected, frames)
        if end and not self._gone:
            # The peer ended a stream: what it left unfinished is dropped with it.
            self._hold(-reader.buffered)
            del self._readers[stream_id]

    def _hold(self, size: int) -> bool:
        """Account ``size`` more bytes held in the node's inbound budget.

        :returns: False when that passes the budget and the link was cut for it.
        """
        self._held += size
        self.shared.inbound += size
        error = self.shared.over_budget(self.peer) if size > 0 else None
        if error is not None:
            self._cut(error)
            return False
        return True

    def _frames(self, stream_id: int, expected: int, frames: list[Frame]) -> None:
        """Deliver the frames of one stream (all of the kind the stream carries)."""
        shared = self.shared
        counters = shared.counters
        for kind, request_id, body in frames:
            if kind != expected:
                self._cut(PeerUnavailable(f"{self.peer!r} sent a frame of kind {kind} here"))
                return
            counters.bytes_received += len(body)
            if kind == RESPONSE:
                future = self.pending.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(body)
                continue
            if kind == REQUEST:
                counters.requests_received += 1
            else:
                counters.messages_received += 1
            guard = self.guard
            if guard is not None:
                try:
                    guard.open(body)  # its lifetime (TLS protects the bytes)
                except AuthenticationError as exc:
                    self._cut(PeerUnavailable(f"{self.peer!r}: {exc}"))
                    return
            handler = shared.handler
            if handler is None:
                continue
            try:
                answer = handler(self.peer, body, self.sender)
            except Exception:
                counters.errors += 1
                continue
            if isinstance(answer, bytes):
                if kind == REQUEST:
                    self._answer(stream_id, request_id, answer)
            elif answer is not None:
                self._answering += 1
                reply_to = (stream_id, request_id) if kind == REQUEST else None
                shared.spawn(self._answer_later(reply_to, answer))
            if self._gone:
                return

    def _defer(self, stream_id: int, expected: int, frames: list[Frame]) -> None:
        """Hold frames back while :data:`MAX_ANSWERS_IN_PROGRESS` answers run.

        They count in the inbound budget, so a peer cannot pile them up without bound.
        """
        size = sum(len(body) + FRAME_COST for _, _, body in frames)
        if self._hold(size):
            self._backlog.append((stream_id, expected, frames, size))

    def _answer(self, stream_id: int, request_id: int, answer: bytes) -> None:
        if self._gone:
            return
        shared = self.shared
        if len(answer) > shared.max_frame_bytes:
            shared.counters.errors += 1  # the requester times out, as for a failed handler
            return
        self._queue(stream_id, HEAD.pack(len(answer) + INNER, RESPONSE, request_id) + answer)
        shared.counters.bytes_sent += len(answer)

    async def _answer_later(
        self, reply_to: tuple[int, int] | None, pending: Awaitable[bytes | None]
    ) -> None:
        """Await a handler's answer; send it where ``reply_to`` says (a request's lane)."""
        try:
            try:
                answer = await pending
            except Exception:
                self.shared.counters.errors += 1
                return
            if answer is not None and reply_to is not None:
                self._answer(*reply_to, answer)
        finally:
            self._answering -= 1
            backlog = self._backlog
            while backlog and self._answering < MAX_ANSWERS_IN_PROGRESS and not self._gone:
                stream_id, expected, frames, size = backlog.popleft()
                self._hold(-size)
                self._frames(stream_id, expected, frames)

    # -- frames out --------------------------------------------------------------------

    def request(self, payload: bytes, future: asyncio.Future[bytes]) -> int:
        """Send ``payload`` as a request on a lane; its answer resolves ``future``.

        Lanes are opened as requests pile up: one more whenever each has
        :data:`BUSY_LANE` in flight, up to ``max_lanes``. Returns the request id.
        """
        if self._gone:
            raise self.failure or PeerUnavailable(f"connection to {self.peer!r} lost")
        self._ids = request_id = self._ids + 1
        lanes = self._lanes
        pending = self.pending
        count = len(lanes)
        if not count:
            lanes.append(self.quic.get_next_available_stream_id())
            count = 1
        elif len(pending) >= BUSY_LANE * count and count < self._max_lanes:
            # aioquic takes a stream id as used once data is handed over (at the turn's end)
            lanes.append(lanes[-1] + 4)
            count += 1
        pending[request_id] = future
        frame = HEAD.pack(len(payload) + INNER, REQUEST, request_id) + payload
        self._queue(lanes[request_id % count], frame)
        return request_id

    def _queue(self, stream_id: int, frame: bytes) -> None:
        """Write ``frame`` on a stream with the others of this loop turn.

        They are handed to aioquic together at the turn's end (:meth:`_hand_over`): its cost
        is per call, not per byte.
        """
        size = len(frame)
        parts = self._out.get(stream_id)
        if parts is None:
            self._out[stream_id] = [frame]
        else:
            parts.append(frame)
        self._out_bytes += size
        self._written += size
        self._queued += size
        if self._watch is None or self._queued > self.shared.max_output_buffer_bytes:
            self._wrote()
        if self._soon is None and not self._gone:
            self._soon = self._loop.call_soon(self.transmit)

    def _hand_over(self) -> None:
        """Give aioquic the frames written on each stream since the last time."""
        quic = self.quic
        out = self._out
        self._out = {}
        self._out_bytes = 0
        for stream_id, parts in out.items():
            try:
                quic.send_stream_data(stream_id, b"".join(parts))
            except (ValueError, RuntimeError) as exc:  # a stream the peer stopped or reset
                self._cut(PeerUnavailable(f"cannot write to {self.peer!r}: {exc}"))
                return

    def abandon(self, request_id: int) -> None:
        """Give up on a request (its time-out): a late answer is dropped."""
        self.pending.pop(request_id, None)

    def one_way(self, payload: bytes) -> None:
        """Queue ``payload`` on the one-way stream (opened at the first)."""
        stream_id = self._one_way_out
        if stream_id is None:
            stream_id = self._one_way_out = self.quic.get_next_available_stream_id(
                is_unidirectional=True
            )
        self._queue(stream_id, head(ONE_WAY, 0, len(payload)) + payload)

    @property
    def full(self) -> bool:
        """Whether more than ``max_output_buffer_bytes`` wait for the peer to take them."""
        if self._queued <= self.shared.max_output_buffer_bytes:
            return False
        self._queued = self._unacked()
        return self._queued > self.shared.max_output_buffer_bytes

    def _wrote(self) -> None:
        """After a write: the output limit, and the watch over the peer's progress."""
        if self._queued > self.shared.max_output_buffer_bytes and self.full:
            self.shared.counters.slow_reader_cuts += 1
            self._cut(
                PeerUnavailable(
                    f"{self.peer!r} left more than {self.shared.max_output_buffer_bytes} bytes "
                    "unread (network.max_output_buffer_bytes)"
                )
            )
        elif self._watch is None and not self._gone:
            self._watch_later(self.shared.write_timeout / 2)

    def unsent(self) -> int:
        """Bytes written and not yet acknowledged by the peer."""
        return 0 if self._gone else self._unacked()

    def _unacked(self) -> int:
        """Bytes written and not yet acknowledged by the peer.

        This turn's frames, and what aioquic's stream buffers hold.
        """
        total = self._out_bytes
        for stream in self.quic._streams.values():
            sender = stream.sender
            total += sender._buffer_stop - sender._buffer_start
        return total

    # -- the watch: handshake, slow frames, slow readers -------------------------------

    def _watch_later(self, delay: float) -> None:
        """Run :meth:`_check` within ``delay`` seconds (sooner if it is due sooner)."""
        if self._gone:
            return
        due = self._loop.time() + max(delay, 0.01)
        if self._watch is not None:
            if self._watch_at <= due:
                return
            self._watch.cancel()
        self._watch_at = due
        self._watch = self._loop.call_at(due, self._check)

    def _check(self) -> None:
        self._watch = None
        if self._gone:
            return
        shared = self.shared
        now = self._loop.time()
        if not self.ready.done():
            self.failure = PeerUnavailable(
                f"cannot connect to {self.peer!r}: no QUIC handshake within "
                f"{shared.dial_timeout:g}s (network.timeout)"
            )
            self.close("no handshake in time")
            return
        oldest: float | None = None
        for reader in self._readers.values():
            if reader.started is not None:
                oldest = reader.started if oldest is None else min(oldest, reader.started)
        if self._gap_since is not None:
            oldest = self._gap_since if oldest is None else min(oldest, self._gap_since)
        if oldest is not None and now - oldest >= shared.read_timeout:
            shared.counters.slow_frame_cuts += 1
            self._cut(
                PeerTimeout(
                    f"{self.peer!r} did not complete a frame within {shared.read_timeout:g}s "
                    "of its first byte (network.read_timeout)"
                )
            )
            return
        self._queued = unacked = self._unacked()
        acked = self._written - unacked
        if acked != self._acked or not unacked:
            self._acked = acked
            self._progress_at = now
        elif now - self._progress_at >= shared.write_timeout:
            # Data waits and the peer took none of it: it stopped reading, or it is gone
            # (a killed peer answers nothing, not even a reset).
            shared.counters.slow_reader_cuts += 1
            self._cut(
                PeerUnavailable(
                    f"{self.peer!r} took nothing for {shared.write_timeout:g}s "
                    "(network.write_timeout)"
                )
            )
            return
        if unacked or oldest is not None:
            wait = min(shared.read_timeout, shared.write_timeout) / 2
            self._watch_later(wait)

    # -- closing -----------------------------------------------------------------------

    def close(self, reason: str = "") -> None:
        """Close the link (a CONNECTION_CLOSE to the peer); pending requests fail."""
        if self._gone:
            return
        code = QuicErrorCode.NO_ERROR if not reason else APP_ERROR
        if self._out:
            self._hand_over()
        self.quic.close(error_code=code, reason_phrase=reason[:200])
        self.transmit()
        self._fail(self.failure or PeerUnavailable(f"connection to {self.peer!r} closed"))

    def _cut(self, error: Exception) -> None:
        """Close for a broken promise of the peer's (counted by the caller or here)."""
        if self._gone:
            return
        self.shared.counters.errors += 1
        self.failure = error
        self.close(str(error))

    def _fail(self, error: Exception) -> None:
        """The link is gone: fail what waits on it, give its buffers back."""
        if self._gone:
            return
        self._gone = True
        self.failure = self.failure or error
        self.on_gone(self)
        shared = self.shared
        shared.links.discard(self)
        shared.inbound -= self._held
        self._held = 0
        self._readers.clear()
        self._backlog.clear()
        for handle in (self._timer, self._soon, self._watch):
            if handle is not None:
                handle.cancel()
        self._timer = self._soon = self._watch = None
        for future in self.pending.values():
            if not future.done():
                future.set_exception(self.failure)
        self.pending.clear()
        if not self.ready.done():
            self.ready.set_exception(self.failure)
            self.ready.exception()
        if not self.closed.done():
            self.closed.set_result(None)
        for cid in list(self.cids):
            self.on_cid(self, cid, False)
        if self._send is None and self._udp is not None:
            self._udp.close()

    def drop(self) -> None:
        """Forget the link at once, telling the peer nothing."""
        self._fail(PeerUnavailable(f"connection to {self.peer!r} dropped"))

    @property
    def gone(self) -> bool:
        """Whether the link is closed."""
        return self._gone


class Listener(asyncio.DatagramProtocol):
    """The accepting socket: routes datagrams to links by connection id, makes new links.

    :param shared: the transport's shared state.
    :param configuration: the server configuration (``_tls.configurations``).
    """

    def __init__(self, shared: Shared, configuration: QuicConfiguration) -> None:
        self.shared = shared
        self.configuration = configuration
        self._links: dict[bytes, Link] = {}
        #: Accepted links whose handshake is not done.
        self._half_open: set[Link] = set()
        self._udp: asyncio.DatagramTransport | None = None
        #: Resolved when the socket is closed (its port free again).
        self.stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._udp = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopped.done():
            self.stopped.set_result(None)

    def _sendto(self, data: bytes, addr: NetworkAddress) -> None:
        if self._udp is not None:
            self._udp.sendto(data, addr)

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        link = self._links.get(data[1 : 1 + self.configuration.connection_id_length])
        if link is not None and not data[0] & 0x80:  # a short header: the common case
            link.datagram_received(data, addr)
            return
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.configuration.connection_id_length
            )
        except ValueError:
            self.shared.counters.errors += 1
            return
        link = self._links.get(header.destination_cid)
        if link is None:
            if (
                self.shared.closed
                or header.packet_type != QuicPacketType.INITIAL
                or len(data) < _SMALLEST_INITIAL
                or header.version not in self.configuration.supported_versions
            ):
                self.shared.counters.errors += 1
                return
            if len(self._half_open) >= MAX_HALF_OPEN:
                self.shared.counters.errors += 1
                return
            quic = _AcceptingQuic(
                configuration=self.configuration,
                original_destination_connection_id=header.destination_cid,
            )
            host, port = addr[0], addr[1]
            peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            link = Link(self.shared, quic, peer, dialled=False, send=self._sendto)
            if not link.receive(data, addr):
                # Not a client hello aioquic could read (it would answer one): no state kept.
                self.shared.counters.errors += 1
                link.drop()
                return
            link.on_cid = self._route
            self._route(link, header.destination_cid, True)
            self._route(link, quic.host_cid, True)
            link._watch_later(self.shared.dial_timeout)
            if not link.ready.done():
                self._half_open.add(link)
                link.ready.add_done_callback(lambda _: self._half_open.discard(link))
            return
        link.datagram_received(data, addr)

    def _route(self, link: Link, cid: bytes, issued: bool) -> None:
        if issued:
            if not link.gone:
                self._links[cid] = link
                link.cids.add(cid)
        else:
            if self._links.get(cid) is link:
                del self._links[cid]
            link.cids.discard(cid)

    def close(self) -> None:
        """Stop listening."""
        if self._udp is not None:
            self._udp.close()


class _AcceptingQuic(QuicConnection):
    """The accepting side's aioquic connection, which asks the dialler for its certificate."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls._request_client_certificate = True
