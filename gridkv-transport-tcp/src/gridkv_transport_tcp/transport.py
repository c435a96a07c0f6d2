"""A TCP transport on asyncio's Protocol API.

Frames on the wire are ``length:u32 | kind:u8 | request id:u64 | body``
(:mod:`gridkv.wire.framing`); a bad length or kind closes the connection before any
body is buffered. Kinds are a request, its response (same id), a one-way message and a hello.

Two lanes per peer. Requests go over a small pool of connections (``network.max_conns``): many
in flight on each, the least busy one used, idle ones beyond ``network.max_idle`` closed, and
a writer waits up to ``network.write_timeout`` when the peer's buffers are full
(back-pressure). One-way frames (every membership probe, ack and gossip) go over one control
connection of their own, so they never queue behind the large replication, handoff and
anti-entropy frames on the pool; they never wait for the peer either: like datagrams they are
queued at once, or lost with the connection.

Limits against a peer that is hostile or broken, each a counted disconnect: at most
``network.max_output_buffer_bytes`` queued for one connection, and nothing taken by the peer
for ``network.write_timeout`` while writing is paused; unfinished inbound frames within
``network.max_inbound_buffer_bytes`` across the node; every frame complete within
``network.read_timeout`` of its first byte; at most :data:`MAX_ANSWERS_IN_PROGRESS` awaitable
answers per connection, with reading paused while that many run.

Dial time-out is ``network.timeout``, answer time-out ``network.read_timeout``. A lost
connection is re-dialled on the next send; after a failed dial the next one waits
``network.reconnect_backoff``, doubling (with jitter) up to ``network.reconnect_max_backoff``,
and sends meanwhile fail at once. TCP_NODELAY is set. With ``network.ssl.enabled`` every
connection is mutual TLS. Errors become GridKV errors: :class:`~gridkv.base.errors.PeerUnavailable`,
:class:`~gridkv.base.errors.PeerTimeout`, :class:`~gridkv.base.errors.ProtocolError`,
:class:`~gridkv.base.errors.ShuttingDown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import ssl
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

from gridkv.base.errors import (
    AuthenticationError,
    ConfigError,
    PeerTimeout,
    PeerUnavailable,
    ProtocolError,
    ShuttingDown,
)
from gridkv.transport.base import (
    Handler,
    Handshake,
    TransportCounters,
    TransportStats,
    check_outbound,
)
from gridkv.wire.framing import (
    HEAD,
    HELLO,
    INNER,
    ONE_WAY,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReader,
)

if TYPE_CHECKING:
    from gridkv.base.options import Options, SslOptions

__all__ = [
    "MAX_ANSWERS_IN_PROGRESS",
    "MAX_REMEMBERED_FAILURES",
    "TcpTransport",
    "split_address",
    "ssl_contexts",
]

#: Frames in progress on each pooled connection before another connection is dialled.
_BUSY = 16
#: Queued bytes that are written at once rather than at the end of the loop turn.
_FLUSH_BYTES = 64 * 1024
#: Addresses whose failed dials (and back-off) are remembered at most; the oldest failure is
#: forgotten first, so addresses named by others cannot grow the table without bound.
MAX_REMEMBERED_FAILURES = 4096
#: Awaitable answers (handlers that could not answer at once) running for one connection; at
#: this many it stops reading from the peer until one finishes.
MAX_ANSWERS_IN_PROGRESS = 256
#: Seconds :meth:`TcpTransport.close` lets queued frames go out before it drops them.
_CLOSE_FLUSH = 2.0
#: How often, per ``network.write_timeout``, a connection whose writing is paused checks that
#: the peer took something meanwhile.
_WRITE_CHECKS = 4


def split_address(address: str, *, listening: bool = False) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) to ``(host, port)``.

    :param listening: the address is one to listen on, where port 0 means "any free port".
    :raises PeerUnavailable: the address has no valid port.
    """
    host, sep, port = address.rpartition(":")
    if (
        not sep
        or not port.isdigit()
        or not int(port) >= (0 if listening else 1)
        or int(port) > 65535
    ):
        raise PeerUnavailable(f"address {address!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def ssl_contexts(options: SslOptions) -> tuple[ssl.SSLContext, ssl.SSLContext] | None:
    """The (server, client) TLS contexts ``network.ssl`` describes; ``None`` when TLS is off.

    Both present this node's certificate; with ``verify_peer`` both require the peer's and
    check it against ``ca_file`` (mutual TLS). TLS 1.2 is the oldest version accepted.

    :raises ConfigError: a certificate, key or CA file cannot be loaded; the message names it.
    """
    if not options.enabled:
        return None
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load(context.load_cert_chain, "cert_file", options.cert_file, options.key_file or None)
        if options.verify_peer:
            context.verify_mode = ssl.CERT_REQUIRED
            if options.ca_file:
                _load(context.load_verify_locations, "ca_file", options.ca_file)
            else:
                context.load_default_certs(
                    ssl.Purpose.CLIENT_AUTH if context is server else ssl.Purpose.SERVER_AUTH
                )
    client.check_hostname = options.verify_peer and options.check_hostname
    if not options.verify_peer:
        client.verify_mode = ssl.CERT_NONE
    return server, client


def _load(method: Any, key: str, *args: Any) -> None:
    try:
        method(*args)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"config key 'network.ssl.{key}': cannot load {args[0]!r}: {exc}"
        ) from None


def _expire(future: asyncio.Future[bytes]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _abandon(future: asyncio.Future[bytes]) -> None:
    """Let go of an answer nobody will await (its request was never written)."""
    if not future.cancel() and not future.cancelled():
        future.exception()  # set meanwhile (time-out, lost connection): marked retrieved


class _Connection(asyncio.Protocol):
    """One TCP connection, in either direction.

    What it promises against its peer: one unfinished inbound frame at most, held within the
    node's inbound budget and for ``read_timeout`` from its first byte; at most
    ``max_output_buffer_bytes`` queued for the peer, and no more than ``write_timeout`` with
    writing paused and nothing taken; at most :data:`MAX_ANSWERS_IN_PROGRESS` awaitable answers
    running. Breaking one cuts the connection, counted.
    """

    def __init__(self, owner: TcpTransport, peer: str, *, lane: bool = False) -> None:
        self.owner = owner
        self.peer = peer
        #: The control lane to ``peer`` (one-way frames), not a pooled request connection.
        self.lane = lane
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        #: Requests using the connection right now (a pool entry in use is not idle).
        self.users = 0
        #: False while the kernel buffer is full (between pause_writing and resume_writing).
        self.writable = True
        self._drained = asyncio.Event()
        self._drained.set()
        self._out: list[bytes] = []
        self._out_bytes = 0
        #: Bytes handed to the asyncio transport, and of those the part it had passed on to
        #: the kernel when last checked, and when that last grew: a peer's reading progress.
        self._handed = 0
        self._taken = 0
        self._taken_at = 0.0
        self._write_timer: asyncio.TimerHandle | None = None
        self._reader = FrameReader(owner.max_frame_bytes)
        #: Inbound bytes this connection holds in the node's budget.
        self._held = 0
        self._frame_timer: asyncio.TimerHandle | None = None
        #: Awaitable answers running, and the frames that arrived while reading was paused
        #: because of them (at most the rest of one read).
        self._answering = 0
        self._backlog: deque[Frame] = deque()
        #: Frames are delivered as they arrive; False while paused for answers, or closing.
        self._reading = True
        #: Closed or closing: nothing more is delivered.
        self._gone = False
        #: Why this side cut the connection; what waiting writers and requests get.
        self._failure: PeerUnavailable | None = None
        #: Resolved when the peer's hello is accepted (at once without a handshake).
        self.ready: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        if self.peer == "inbound":
            peername = transport.get_extra_info("peername")
            if peername:
                self.peer = f"{peername[0]}:{peername[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.owner._connections.add(self)
        handshake = self.owner._handshake
        if handshake is None:
            self.ready.set_result(None)
        else:
            self.write_now(HELLO, 0, handshake.hello())
            self._flush()  # before anything the peer says is read
            # A peer that never says hello (either direction) does not keep the socket.
            self._loop.call_later(self.owner.dial_timeout, self._hello_overdue)

    def _hello_overdue(self) -> None:
        if not self.ready.done():
            self.owner.counters.errors += 1
            self.abort()

    def data_received(self, data: bytes) -> None:
        """Split the stream into frames and deliver them; enforce the inbound limits."""
        if self._gone:
            return
        reader = self._reader
        try:
            frames = reader.feed(data, self._loop.time())
        except ProtocolError as exc:
            self._cut(PeerUnavailable(f"{self.peer!r} broke the frame format: {exc}"))
            return
        if (reader.buffered or self._held) and not self._hold(reader.buffered):
            return
        if not frames:
            return
        if self._reading:
            self._deliver(frames)
        else:
            self._backlog.extend(frames)

    def _hold(self, size: int) -> bool:
        """Account ``size`` bytes of unfinished frame in the node's inbound budget.

        :returns: False when that passes the budget and the connection was cut for it.
        """
        owner = self.owner
        owner._inbound += size - self._held
        self._held = size
        if not size:
            return True
        if owner._inbound > owner.max_inbound_buffer_bytes:
            owner.counters.inbound_full_cuts += 1
            self._cut(
                PeerUnavailable(
                    f"{self.peer!r} took the node past {owner.max_inbound_buffer_bytes} bytes of "
                    "unfinished inbound frames (network.max_inbound_buffer_bytes)"
                )
            )
            return False
        self._watch_frame()
        return True

    def _watch_frame(self) -> None:
        """Arm the deadline of the unfinished frame, if there is one and it is not armed."""
        started = self._reader.started
        if started is not None and self._frame_timer is None and self._reading:
            delay = started + self.owner.read_timeout - self._loop.time()
            self._frame_timer = self._loop.call_later(delay, self._check_frame)

    def _check_frame(self) -> None:
        """A frame not complete ``read_timeout`` after its first byte cuts the connection.

        Counted from the first byte, not the last: a peer trickling a frame a byte at a time
        does not keep the connection (and its buffer) any longer than one that stops.
        """
        self._frame_timer = None
        started = self._reader.started
        if started is None or not self._reading:
            return  # complete, or paused by this side (resuming re-arms it)
        timeout = self.owner.read_timeout
        if self._loop.time() - started < timeout:
            self._watch_frame()  # a later frame is in progress now
            return
        self.owner.counters.slow_frame_cuts += 1
        self._cut(
            PeerTimeout(
                f"{self.peer!r} did not complete a frame within {timeout:g}s of its first byte "
                "(network.read_timeout)"
            )
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        for timer in (self._frame_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._frame_timer = self._write_timer = None
        self.owner._connections.discard(self)
        self.owner._forget(self)
        error = self._failure or PeerUnavailable(f"connection to {self.peer!r} lost")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()
        if not self.ready.done():
            self.ready.set_exception(PeerUnavailable(f"{self.peer!r} closed before its hello"))
            self.ready.exception()
        if not self.closed.done():
            self.closed.set_result(None)
        self.writable = True
        self._drained.set()

    def pause_writing(self) -> None:
        self.writable = False
        self._drained.clear()
        if self._write_timer is None:
            self._taken = self._taken_now()
            self._taken_at = self._loop.time()
            self._write_timer = self._loop.call_later(
                self.owner.write_timeout / _WRITE_CHECKS, self._check_writing
            )

    def resume_writing(self) -> None:
        self.writable = True
        self._drained.set()

    def _taken_now(self) -> int:
        transport = self.transport
        return self._handed - (transport.get_write_buffer_size() if transport else 0)

    def _check_writing(self) -> None:
        """While writing is paused, a peer that takes nothing for ``write_timeout`` is cut.

        The peer may read slowly (what it takes is bounded by ``max_output_buffer_bytes``);
        one that takes nothing at all is not reading, and would hold its connection forever.
        """
        self._write_timer = None
        if self.writable or self._gone:
            return
        now = self._loop.time()
        taken = self._taken_now()
        if taken > self._taken:
            self._taken, self._taken_at = taken, now
        timeout = self.owner.write_timeout
        if now - self._taken_at >= timeout:
            self.owner.counters.slow_reader_cuts += 1
            self._cut(self._write_timed_out())
            return
        delay = min(timeout / _WRITE_CHECKS, self._taken_at + timeout - now)
        self._write_timer = self._loop.call_later(delay, self._check_writing)

    def _write_timed_out(self) -> PeerTimeout:
        return PeerTimeout(
            f"{self.peer!r} did not take data for {self.owner.write_timeout:g}s "
            "(network.write_timeout)"
        )

    # -- frames in ---------------------------------------------------------------------

    def _deliver(self, frames: list[Frame]) -> None:
        rest = iter(frames)
        for kind, request_id, body in rest:
            self._frame(kind, request_id, body)
            if not self._reading:
                if not self._gone:
                    self._backlog.extend(rest)
                return

    def _frame(self, kind: int, request_id: int, body: bytes) -> None:
        owner = self.owner
        owner.counters.bytes_received += len(body)
        if not self.ready.done():
            self._hello(kind, body)
            return
        if kind == RESPONSE:
            future = self.pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(body)
            return
        if kind == REQUEST:
            owner.counters.requests_received += 1
        elif kind == ONE_WAY:
            owner.counters.messages_received += 1
        else:  # a second hello
            owner.counters.errors += 1
            self.abort()
            return
        handler = owner._handler
        if handler is None:
            return
        try:
            answer = handler(self.peer, body)
        except Exception:
            owner.counters.errors += 1
            return
        if isinstance(answer, bytes):
            if kind == REQUEST:
                self._answer(request_id, answer)
        elif answer is not None:
            self._answering += 1
            owner._spawn(self._answer_later(kind, request_id, answer))
            if self._answering >= MAX_ANSWERS_IN_PROGRESS:
                self._pause_reading()

    def _hello(self, kind: int, body: bytes) -> None:
        """The first frame on a connection with a handshake: the peer's hello, or the end."""
        handshake = self.owner._handshake
        assert handshake is not None
        try:
            if kind != HELLO:
                raise AuthenticationError(f"{self.peer!r} sent a frame before its hello")
            handshake.check(self.peer, body)
        except AuthenticationError as exc:
            self.owner.counters.errors += 1
            self.ready.set_exception(exc)
            self.ready.exception()  # marked retrieved; a dialler awaits it in _dial
            self.abort()  # and nothing after the refused hello is delivered
            return
        self.ready.set_result(None)

    async def _answer_later(
        self, kind: int, request_id: int, pending: Awaitable[bytes | None]
    ) -> None:
        try:
            try:
                answer = await pending
            except Exception:
                self.owner.counters.errors += 1
                return
            if kind == REQUEST and answer is not None:
                self._answer(request_id, answer)
        finally:
            self._answering -= 1
            if not self._reading and not self._gone:
                self._resume_reading()

    def _pause_reading(self) -> None:
        """Stop reading from the peer while :data:`MAX_ANSWERS_IN_PROGRESS` answers run."""
        self._reading = False
        if self.transport is not None:
            self.transport.pause_reading()
        if self._frame_timer is not None:  # the peer cannot finish a frame nobody reads
            self._frame_timer.cancel()
            self._frame_timer = None

    def _resume_reading(self) -> None:
        """Deliver the frames held back while answers ran; read again once they are out."""
        self._reading = True
        backlog = self._backlog
        while backlog and self._reading:
            self._frame(*backlog.popleft())
        if self._reading and self.transport is not None:
            self.transport.resume_reading()
            self._reader.postpone(self._loop.time())
            self._watch_frame()

    # -- frames out --------------------------------------------------------------------

    def _answer(self, request_id: int, answer: bytes) -> None:
        try:
            if self.writable:
                self.write_now(RESPONSE, request_id, answer)
            else:
                self.queue(RESPONSE, request_id, answer)
        except PeerUnavailable:
            pass  # closed: the requester learns it from its own side

    def queue(self, kind: int, request_id: int, body: bytes) -> None:
        """Queue a frame without waiting for the peer (answers and one-way frames).

        While the peer is behind (writing paused) the frame waits in the connection's output
        buffer; if that would pass ``max_output_buffer_bytes`` the connection is cut instead.

        :raises PeerUnavailable: the connection is closed, or was cut for this frame.
        """
        transport = self.transport
        if not self.writable and transport is not None:
            queued = self._out_bytes + transport.get_write_buffer_size()
            limit = self.owner.max_output_buffer_bytes
            if queued + len(body) + HEAD.size > limit:
                self.owner.counters.slow_reader_cuts += 1
                error = PeerUnavailable(
                    f"{self.peer!r} left more than {limit} bytes unread "
                    "(network.max_output_buffer_bytes)"
                )
                self._cut(error)
                raise error
        self.write_now(kind, request_id, body)

    def write_now(self, kind: int, request_id: int, body: bytes) -> None:
        """Queue a frame for the kernel buffer; callers check :attr:`writable` first.

        Frames queued in one turn of the event loop go out in one write at its end, so many
        requests in flight cost one system call, not one each.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            raise self._failure or PeerUnavailable(f"connection to {self.peer!r} is closed")
        out = self._out
        if not out:
            self._loop.call_soon(self._flush)
        out.append(HEAD.pack(len(body) + INNER, kind, request_id))  # frames.head, inlined
        out.append(body)
        self._out_bytes += len(body) + HEAD.size
        self.owner.counters.bytes_sent += len(body)
        if self._out_bytes >= _FLUSH_BYTES:
            # A writer that never yields to the loop must not queue without bound: hand the
            # batch over now, and the transport's high-water mark pauses the next writer.
            self._flush()

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        self._handed += self._out_bytes
        self._out_bytes = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"".join(out))

    async def write(self, kind: int, request_id: int, body: bytes) -> None:
        """Write a frame, waiting up to ``write_timeout`` for the peer to take queued data.

        :raises PeerTimeout: the peer took nothing in time.
        :raises PeerUnavailable: the connection closed meanwhile.
        """
        if not self.writable:
            loop = self._loop
            deadline = loop.time() + self.owner.write_timeout
            while not self.writable:  # woken with other writers, one may have filled it again
                try:
                    await asyncio.wait_for(self._drained.wait(), deadline - loop.time())
                except TimeoutError:
                    raise self._write_timed_out() from None
        self.write_now(kind, request_id, body)

    # -- closing -----------------------------------------------------------------------

    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def _stop(self) -> None:
        """Deliver nothing more, and give the unfinished frame's bytes back to the budget."""
        self._gone = True
        self._reading = False
        self._backlog.clear()
        self.owner._inbound -= self._held
        self._held = 0
        self._reader.clear()

    def _cut(self, error: PeerUnavailable) -> None:
        """Close at once because the peer broke a limit or the frame format; counted."""
        self.owner.counters.errors += 1
        self._failure = error
        self.abort()

    def close(self) -> None:
        """Close after the queued frames have been written."""
        self._flush()
        self._stop()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is queued either way."""
        self._stop()
        if self.transport is not None:
            self.transport.abort()


class TcpTransport:
    """The ``tcp`` transport.

    :param address: the address peers reach this node at (``host:port``).
    :param bind: the address to listen on; ``address`` when ``None``.
    :param max_conns: connections per peer at most.
    :param max_idle: idle connections kept per peer.
    :param dial_timeout: seconds to open a connection.
    :param read_timeout: default seconds to wait for an answer; also the most an inbound
        frame may take from its first byte to its last.
    :param write_timeout: seconds a blocked request may wait to be written; also the most a
        peer may go without taking anything while data waits for it.
    :param max_frame_bytes: largest frame body sent or accepted.
    :param max_output_buffer_bytes: bytes queued for one connection's peer at most.
    :param max_inbound_buffer_bytes: bytes of unfinished inbound frames held across all
        connections at most (at least ``max_frame_bytes``).
    :param reconnect_backoff: first wait after a failed dial before the next one.
    :param reconnect_max_backoff: longest such wait.
    :param ssl_contexts: ``(server, client)`` TLS contexts; ``None`` for plain TCP.
    """

    name = "tcp"

    def __init__(
        self,
        address: str,
        *,
        bind: str | None = None,
        max_conns: int = 16,
        max_idle: int = 4,
        dial_timeout: float = 3.0,
        read_timeout: float = 2.0,
        write_timeout: float = 2.0,
        max_frame_bytes: int = 16 * 1024 * 1024,
        max_output_buffer_bytes: int = 64 * 1024 * 1024,
        max_inbound_buffer_bytes: int = 64 * 1024 * 1024,
        reconnect_backoff: float = 0.05,
        reconnect_max_backoff: float = 1.0,
        ssl_contexts: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    ) -> None:
        self._address = address
        self._bind = bind or address
        self.max_conns = max_conns
        self.max_idle = max_idle
        self.dial_timeout = dial_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_frame_bytes = max_frame_bytes
        self.max_output_buffer_bytes = max_output_buffer_bytes
        self.max_inbound_buffer_bytes = max_inbound_buffer_bytes
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_max_backoff = reconnect_max_backoff
        self._ssl = ssl_contexts
        #: address -> (failed dials in a row, loop time before which no dial is tried, error)
        self._failures: dict[str, tuple[int, float, str]] = {}
        self._rng = random.Random(f"tcp {address}")
        self._handler: Handler | None = None
        self._handshake: Handshake | None = None
        self._server: asyncio.Server | None = None
        self._pools: dict[str, list[_Connection]] = {}
        #: address -> the control lane: the connection one-way frames to it go over.
        self._lanes: dict[str, _Connection] = {}
        #: (address, lane) -> the dial in progress, which concurrent callers share.
        self._dialing: dict[tuple[str, bool], asyncio.Future[_Connection]] = {}
        self._connections: set[_Connection] = set()
        #: Bytes of unfinished inbound frames held by all connections.
        self._inbound = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._closed = False
        self.counters = TransportCounters()

    @classmethod
    def from_options(cls, options: Options) -> TcpTransport:
        """Build the transport a node's options describe (its ``network`` section).

        :raises ConfigError: ``local_address`` is not host:port, or a TLS file cannot be loaded.
        """
        net = options.network
        for key, value in (
            ("local_address", options.local_address),
            ("network.bind_addr", net.bind_addr),
        ):
            if value:
                try:
                    split_address(value, listening=True)
                except PeerUnavailable:
                    raise ConfigError(
                        f"config key {key!r}: the tcp transport needs host:port (got {value!r})"
                    ) from None
        return cls(
            options.local_address,
            bind=net.bind_addr or None,
            max_conns=net.max_conns,
            max_idle=net.max_idle,
            dial_timeout=net.timeout,
            read_timeout=net.read_timeout,
            write_timeout=net.write_timeout,
            max_frame_bytes=net.max_frame_bytes,
            max_output_buffer_bytes=net.max_output_buffer_bytes,
            max_inbound_buffer_bytes=net.max_inbound_buffer_bytes,
            reconnect_backoff=net.reconnect_backoff,
            reconnect_max_backoff=net.reconnect_max_backoff,
            ssl_contexts=ssl_contexts(net.ssl),
        )

    @property
    def local_address(self) -> str:
        """The address peers reach this node at."""
        return self._address

    async def start(self, handler: Handler, handshake: Handshake | None = None) -> None:
        """Listen on the bind address; inbound frames go to ``handler``.

        :raises PeerUnavailable: the address cannot be listened on.
        """
        if self._closed:
            raise ShuttingDown(f"tcp transport {self._address!r} is closed")
        self._handler = handler
        self._handshake = handshake
        host, port = split_address(self._bind, listening=True)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self, "inbound"),
                host,
                port,
                reuse_address=True,
                ssl=self._ssl[0] if self._ssl else None,
                ssl_handshake_timeout=self.dial_timeout if self._ssl else None,
            )
        except OSError as exc:
            raise PeerUnavailable(
                f"cannot listen on {self._bind!r} (network.bind_addr or local_address): "
                f"{exc.strerror or exc}"
            ) from None
        if port == 0 and self._server.sockets:
            actual = self._server.sockets[0].getsockname()[1]
            self._address = f"{split_address(self._address, listening=True)[0]}:{actual}"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget(self, conn: _Connection) -> None:
        if conn.lane:
            if self._lanes.get(conn.peer) is conn:
                del self._lanes[conn.peer]
            return
        pool = self._pools.get(conn.peer)
        if pool is not None and conn in pool:
            pool.remove(conn)

    def _pooled(self, address: str) -> _Connection | None:
        """The fast path of :meth:`_acquire`: the first pooled connection, if open and not busy."""
        pool = self._pools.get(address)
        if pool:
            for conn in pool:
                if conn.users < _BUSY and conn.usable():
                    conn.users += 1
                    return conn
        return None

    async def _acquire(self, address: str) -> _Connection:
        """A connection to ``address`` marked in use (give it back with :meth:`_release`).

        The least busy pooled connection is used; another is dialled when every one has
        ``_BUSY`` frames in progress and the pool is below ``max_conns``.
        """
        closed = 0
        while True:
            conn = await self._pick(address)
            if not conn.usable():
                closed += 1
                if closed > 3:
                    raise PeerUnavailable(f"connections to {address!r} keep closing")
                continue
            if conn.users >= _BUSY and self._may_dial(address):
                continue  # it filled up while this caller waited on its dial: spread out
            conn.users += 1
            return conn

    def _may_dial(self, address: str) -> bool:
        live = [c for c in self._pools.get(address, []) if c.usable()]
        return len(live) < self.max_conns and all(c.users >= _BUSY for c in live)

    def _release(self, conn: _Connection) -> None:
        conn.users -= 1
        pool = self._pools.get(conn.peer, [])
        idle = [c for c in pool if not c.users and not c.pending]
        for extra in idle[self.max_idle :]:
            pool.remove(extra)
            extra.close()

    async def _pick(self, address: str) -> _Connection:
        if self._closed:
            raise ShuttingDown(f"tcp transport {self._address!r} is closed")
        live = [c for c in self._pools.get(address, []) if c.usable()]
        if live:
            best = min(live, key=lambda c: c.users)
            if best.users < _BUSY or len(live) >= self.max_conns:
                return best
        return await self._connect(address, lane=False)

    async def _connect(self, address: str, *, lane: bool) -> _Connection:
        """Dial ``address`` for its pool or as its control lane.

        Concurrent callers share one dial per address and role. After failed dials the peer
        is not dialled again until its back-off has passed; meanwhile this fails at once.
        """
        key = (address, lane)
        dialing = self._dialing.get(key)
        if dialing is not None:
            return await asyncio.shield(dialing)
        failed = self._failures.get(address)
        if failed is not None:
            wait = failed[1] - asyncio.get_running_loop().time()
            if wait > 0:
                self.counters.errors += 1
                raise PeerUnavailable(
                    f"{address!r} is unreachable ({failed[2]}); next dial in {wait:.2f}s "
                    "(network.reconnect_backoff)"
                )
        future: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
        self._dialing[key] = future
        try:
            try:
                conn = await self._dial(address, lane)
            except (PeerUnavailable, PeerTimeout) as exc:
                self._dial_failed(address, str(exc))
                raise
            self._failures.pop(address, None)
            if lane:
                self._lanes[address] = conn
            else:
                self._pools.setdefault(address, []).append(conn)
            future.set_result(conn)
            return conn
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                # The caller that dialled was cancelled; the others waiting on its dial were
                # not, and get a GridKV error (and may dial again), not its cancellation.
                shared: BaseException = PeerUnavailable(
                    f"the dial to {address!r} was abandoned by the caller that started it"
                )
            else:
                shared = exc
            future.set_exception(shared)
            future.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            del self._dialing[key]

    def _dial_failed(self, address: str, error: str) -> None:
        count = self._failures.pop(address, (0, 0.0, ""))[0] + 1
        delay = min(self.reconnect_max_backoff, self.reconnect_backoff * 2 ** (count - 1))
        delay *= self._rng.uniform(0.8, 1.0)
        self._failures[address] = (count, asyncio.get_running_loop().time() + delay, error)
        while len(self._failures) > MAX_REMEMBERED_FAILURES:
            # The address that failed longest ago goes first (kept in order of failure).
            del self._failures[next(iter(self._failures))]

    async def _dial(self, address: str, lane: bool) -> _Connection:
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        tls = self._ssl[1] if self._ssl else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self, address, lane=lane),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                ),
                self.dial_timeout,
            )
        except TimeoutError:
            self.counters.errors += 1
            raise PeerTimeout(
                f"could not connect to {address!r} within {self.dial_timeout:g}s (network.timeout)"
            ) from None
        except OSError as exc:  # ssl.SSLError included: a refused or unverifiable certificate
            self.counters.errors += 1
            raise PeerUnavailable(f"cannot connect to {address!r}: {exc.strerror or exc}") from None
        if self._handshake is not None:
            try:
                await asyncio.wait_for(asyncio.shield(conn.ready), self.dial_timeout)
            except TimeoutError:
                self.counters.errors += 1
                conn.abort()
                raise PeerTimeout(
                    f"{address!r} sent no hello within {self.dial_timeout:g}s (network.timeout)"
                ) from None
            except (AuthenticationError, PeerUnavailable) as exc:
                conn.abort()
                raise PeerUnavailable(f"handshake with {address!r} failed: {exc}") from None
        return conn

    def _check(self, address: str, payload: bytes) -> None:
        check_outbound(
            self.name,
            self._address,
            self._closed,
            address,
            len(payload),
            self.max_frame_bytes,
            self.counters,
        )

    async def request(self, address: str, payload: bytes, timeout: float | None = None) -> bytes:
        """Send ``payload`` to ``address`` and return the answer."""
        self._check(address, payload)
        conn = self._pooled(address) or await self._acquire(address)
        request_id = next(self._ids)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        conn.pending[request_id] = future
        self.counters.requests_sent += 1
        wait = self.read_timeout if timeout is None else timeout
        timer = loop.call_later(wait, _expire, future)
        try:
            try:
                if conn.writable:
                    conn.write_now(REQUEST, request_id, payload)
                else:
                    await conn.write(REQUEST, request_id, payload)
            except BaseException:
                _abandon(future)
                raise
            return await future
        except PeerTimeout:  # the write timed out (a subclass of TimeoutError)
            self.counters.errors += 1
            raise
        except TimeoutError:  # set by the timer
            self.counters.errors += 1
            raise PeerTimeout(f"{address!r} did not answer within {wait:g}s") from None
        finally:
            timer.cancel()
            conn.pending.pop(request_id, None)
            self._release(conn)

    async def send(self, address: str, payload: bytes) -> None:
        """Send ``payload`` one way, over the peer's control lane.

        It never waits for the peer to read: the frame is queued at once (within
        ``max_output_buffer_bytes``), so a probe is not held up by a peer that has stopped.

        :raises PeerUnavailable: the lane cannot be opened, or was cut because the peer reads
            nothing.
        """
        self._check(address, payload)
        conn = self._lanes.get(address)
        if conn is None or not conn.usable():
            conn = await self._connect(address, lane=True)
        self.counters.messages_sent += 1
        conn.queue(ONE_WAY, 0, payload)

    async def close(self) -> None:
        """Stop listening, close every connection and fail waiting requests; idempotent.

        Frames already queued are written first, for a few seconds at most.
        """
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        error = ShuttingDown(f"tcp transport {self._address!r} closed during the request")
        conns = list(self._connections)
        for conn in conns:
            for future in conn.pending.values():
                if not future.done():
                    future.set_exception(error)
            conn.pending.clear()
            conn.close()
        if conns:
            _, unflushed = await asyncio.wait([c.closed for c in conns], timeout=_CLOSE_FLUSH)
            if unflushed:  # peers that do not read their last frames: drop them
                for conn in conns:
                    conn.abort()
                await asyncio.wait(unflushed, timeout=_CLOSE_FLUSH)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def stats(self) -> TransportStats:
        """Current counters."""
        return self.counters.snapshot(
            self.name,
            self._address,
            self._bind,
            connections=len(self._connections),
            partial_bytes=self._inbound,
        )
