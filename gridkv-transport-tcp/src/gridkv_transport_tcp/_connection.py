"""One tcp connection: its life from hello to close, and the frames that come in over it.

With a handshake (the node's authenticator's), the dialler's first frame is its hello and the
acceptor's its reply (or its refusal, before it closes); after that each side's writes travel
as records its :class:`~gridkv.transport.base.ConnectionGuard` sealed, and every frame that
arrives in any other way cuts the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from collections.abc import Awaitable
from typing import Protocol, cast

from gridkv.base.errors import AuthenticationError, PeerTimeout, PeerUnavailable, ProtocolError
from gridkv.transport.base import ConnectionGuard
from gridkv.wire.framing import (
    HELLO,
    ONE_WAY,
    RECORD,
    RECORD_SLACK,
    REQUEST,
    RESPONSE,
    Frame,
    FrameReader,
)

from gridkv_transport_tcp._output import Output
from gridkv_transport_tcp._shared import Shared

__all__ = ["MAX_ANSWERS_IN_PROGRESS", "Connection", "Registry"]

#: Awaitable answers (handlers that could not answer at once) running for one connection; at
#: this many it stops reading from the peer until one finishes.
MAX_ANSWERS_IN_PROGRESS = 256


class Registry(Protocol):
    """What a connection tells the one that keeps track of connections (the pool)."""

    def opened(self, conn: Connection) -> None:
        """``conn`` is connected (either direction)."""

    def lost(self, conn: Connection) -> None:
        """``conn`` is closed: it carries nothing more."""


class Connection(Output):
    """One TCP connection, in either direction.

    What it promises against its peer: one unfinished inbound frame at most, held within the
    node's inbound budget and for ``read_timeout`` from its first byte; at most
    ``max_output_buffer_bytes`` queued for the peer, and no more than ``write_timeout`` with
    writing paused and nothing taken (:class:`~gridkv_transport_tcp._output.Output`); at most
    :data:`MAX_ANSWERS_IN_PROGRESS` awaitable answers running. Breaking one cuts the
    connection, counted.
    """

    def __init__(
        self, shared: Shared, registry: Registry, peer: str, *, lane: bool = False
    ) -> None:
        super().__init__(shared, peer)
        self._registry = registry
        #: The control lane to ``peer`` (one-way frames), not a pooled request connection.
        self.lane = lane
        #: Whether this side dialled (it says hello first) or accepted the connection.
        self.dialled = peer != "inbound"
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.closed: asyncio.Future[None] = self._loop.create_future()
        #: Requests using the connection right now (a pool entry in use is not idle).
        self.users = 0
        #: Whether a caller has taken it yet; a connection just dialled for callers that
        #: have not resumed is not idle (the pool must not close it under them).
        self.used = False
        guarded = shared.handshake is not None
        self._reader = FrameReader(shared.max_frame_bytes + (RECORD_SLACK if guarded else 0))
        #: The frames inside records (with a handshake), each record whole frames.
        self._inner = FrameReader(shared.max_frame_bytes) if guarded else None
        #: The dialler's hello, kept until the reply (what the handshake needs of it).
        self._started: object = None
        #: Inbound bytes this connection holds in the node's budget.
        self._held = 0
        self._frame_timer: asyncio.TimerHandle | None = None
        #: Awaitable answers running, and the frames that arrived while reading was paused
        #: because of them (at most the rest of one read).
        self._answering = 0
        self._backlog: deque[Frame] = deque()
        #: Frames are delivered as they arrive; False while paused for answers, or closing.
        self._reading = True
        #: Resolved when the peer's hello is accepted (at once without a handshake).
        self.ready: asyncio.Future[None] = self._loop.create_future()
        #: The node id the handshake authenticated the peer as (``None`` without one).
        self.sender: str | None = None

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
        self._registry.opened(self)
        handshake = self.shared.handshake
        if handshake is None:
            self.ready.set_result(None)
            return
        tls = transport.get_extra_info("ssl_object")
        # Only mutual TLS (both sides require the other's certificate) lets both decide alike.
        if tls is not None and tls.context.verify_mode == ssl.CERT_REQUIRED:
            certificate = tls.getpeercert(binary_form=True)
            try:
                guard = handshake.tls_peer(certificate, self.peer if self.dialled else "")
            except AuthenticationError as exc:
                handshake.refusal(exc)  # counted
                self._refused(exc)
                return
            if guard is not None:  # TLS authenticated the peer under the same trust root
                self._secured(guard)
                return
        if not self.dialled:
            # A peer that never says hello does not keep the socket (a dialler's wait for
            # the reply is bounded by the same time-out, in Pool._dial).
            self._loop.call_later(self.shared.dial_timeout, self._hello_overdue)
            return
        try:
            self._started, hello = handshake.initiate(self.peer)
        except AuthenticationError as exc:
            self._refused(exc)
            return
        self.write_now(HELLO, 0, hello)
        self._flush()

    def _hello_overdue(self) -> None:
        if self.ready.done():
            return
        handshake = self.shared.handshake
        if handshake is not None:  # counted with the other refusals
            handshake.refusal(
                AuthenticationError(
                    f"{self.peer!r} sent no hello within {self.shared.dial_timeout:g}s "
                    "(network.timeout)"
                )
            )
        self.shared.counters.errors += 1
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
        if self._inner is not None:
            opened = self._open(frames)
            if not opened:
                return
            frames = opened
        if self._reading:
            # The answers given at once go out now, in one write: not a loop turn later.
            self.delivering = True
            try:
                self._deliver(frames)
            finally:
                self.delivered()
        else:
            self._backlog.extend(frames)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None
        self._registry.lost(self)
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
        self._writing_lost()

    # -- inbound limits ----------------------------------------------------------------

    def _hold(self, size: int) -> bool:
        """Account ``size`` bytes of unfinished frame in the node's inbound budget.

        :returns: False when that passes the budget and the connection was cut for it.
        """
        shared = self.shared
        shared.inbound += size - self._held
        self._held = size
        if not size:
            return True
        error = shared.over_budget(self.peer)
        if error is not None:
            self._cut(error)
            return False
        self._watch_frame()
        return True

    def _watch_frame(self) -> None:
        """Arm the deadline of the unfinished frame, if there is one and it is not armed."""
        started = self._reader.started
        if started is not None and self._frame_timer is None and self._reading:
            delay = started + self.shared.read_timeout - self._loop.time()
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
        timeout = self.shared.read_timeout
        if self._loop.time() - started < timeout:
            self._watch_frame()  # a later frame is in progress now
            return
        self.shared.counters.slow_frame_cuts += 1
        self._cut(
            PeerTimeout(
                f"{self.peer!r} did not complete a frame within {timeout:g}s of its first byte "
                "(network.read_timeout)"
            )
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
        shared = self.shared
        shared.counters.bytes_received += len(body)
        if kind == RESPONSE:
            future = self.pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(body)
            return
        if kind == REQUEST:
            shared.counters.requests_received += 1
        elif kind == ONE_WAY:
            shared.counters.messages_received += 1
        else:  # a hello (or a record) among the frames
            shared.counters.errors += 1
            self.abort()
            return
        handler = shared.handler
        if handler is None:
            return
        try:
            answer = handler(self.peer, body, self.sender)
        except Exception:
            shared.counters.errors += 1
            return
        if isinstance(answer, bytes):
            if kind == REQUEST:
                self._answer(request_id, answer)
        elif answer is not None:
            self._answering += 1
            shared.spawn(self._answer_later(kind, request_id, answer))
            if self._answering >= MAX_ANSWERS_IN_PROGRESS:
                self._pause_reading()

    def _open(self, frames: list[Frame]) -> list[Frame]:
        """The frames the records among ``frames`` carry (the hello or reply first, if due).

        Anything else than whole frames in sealed records, once the hellos are done, cuts
        the connection (and an empty list comes back).
        """
        inner = self._inner
        assert inner is not None
        opened: list[Frame] = []
        for kind, _, body in frames:
            if self._gone:
                return []
            guard = self.guard
            if guard is None:
                self._hello(kind, body)
                continue
            try:
                if kind != RECORD:
                    outside = AuthenticationError("unauthenticated frame outside a sealed record")
                    assert self.shared.handshake is not None
                    self.shared.handshake.refusal(outside)  # counted
                    raise outside
                opened += inner.feed(guard.open(body), 0.0)
                if inner.buffered:
                    raise ProtocolError("a record that ends inside a frame")
            except (AuthenticationError, ProtocolError) as exc:
                why = f"{self.peer!r} broke its connection's protection: {exc}"
                self._cut(PeerUnavailable(why))
                return []
        return opened

    def _hello(self, kind: int, body: bytes) -> None:
        """The first frame on a connection with a handshake: the hello, or its reply."""
        handshake = self.shared.handshake
        assert handshake is not None
        try:
            if kind != HELLO:
                raise AuthenticationError(f"{self.peer!r} sent a frame before its hello")
            if self.dialled:
                guard = handshake.complete(self.peer, self._started, body)
            else:
                guard, reply = handshake.respond(self.peer, body)
                self.write_now(HELLO, 0, reply)
                self._flush()  # not sealed: it is what the dialler's guard comes from
        except AuthenticationError as exc:
            if self.dialled:
                self._refused(exc)
                return
            # Counted; the dialler learns why (its key, its secret, its clock) before the close.
            refusal = handshake.refusal(exc)
            if kind == HELLO:
                with contextlib.suppress(PeerUnavailable):
                    self.write_now(HELLO, 0, refusal)
            self._refused(exc, flush=True)
            return
        self._started = None
        self._secured(guard)

    def _secured(self, guard: ConnectionGuard) -> None:
        """The handshake is done: ``guard`` protects the connection from now on."""
        self.guard = guard
        self.sender = guard.peer_id
        self.ready.set_result(None)

    def _refused(self, exc: AuthenticationError, *, flush: bool = False) -> None:
        """The handshake failed: nothing more is delivered, the connection closes."""
        self.shared.counters.errors += 1
        self.ready.set_exception(exc)
        self.ready.exception()  # marked retrieved; a dialler awaits it in Pool._dial
        if flush:
            self.close()  # the refusal goes out first; nothing more is read
        else:
            self.abort()

    def _answer(self, request_id: int, answer: bytes) -> None:
        try:
            if self.writable:
                self.write_now(RESPONSE, request_id, answer)
            else:
                self.queue(RESPONSE, request_id, answer)
        except PeerUnavailable:
            pass  # closed: the requester learns it from its own side

    async def _answer_later(
        self, kind: int, request_id: int, pending: Awaitable[bytes | None]
    ) -> None:
        try:
            try:
                answer = await pending
            except Exception:
                self.shared.counters.errors += 1
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

    # -- closing -----------------------------------------------------------------------

    def _stop(self) -> None:
        """Deliver nothing more, and give the unfinished frame's bytes back to the budget."""
        self._gone = True
        self._reading = False
        self._backlog.clear()
        self.shared.inbound -= self._held
        self._held = 0
        self._reader.clear()

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
