"""A tcp connection's sending side: frames out, one write per loop turn, the output limits.

On a connection a handshake protects, each write is one record its guard sealed.
"""

from __future__ import annotations

import asyncio

from gridkv.base.errors import PeerTimeout, PeerUnavailable
from gridkv.transport.base import ConnectionGuard
from gridkv.wire.framing import HEAD, INNER, RECORD

from gridkv_transport_tcp._shared import Shared

__all__ = ["Output"]

#: Queued bytes that are written at once rather than at the end of the loop turn.
_FLUSH_BYTES = 64 * 1024
#: How often, per ``write_timeout``, a connection whose writing is paused checks that the peer
#: took something meanwhile.
_WRITE_CHECKS = 4


class Output(asyncio.Protocol):
    """The sending side of one connection (``Connection`` builds on it).

    Frames queued in one turn of the event loop go out in one write at its end. What it
    promises against its peer: at most ``max_output_buffer_bytes`` queued for it, and no more
    than ``write_timeout`` with writing paused and nothing taken. Breaking one cuts the
    connection, counted.
    """

    def __init__(self, shared: Shared, peer: str) -> None:
        self.shared = shared
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        #: False while the kernel buffer is full (between pause_writing and resume_writing).
        self.writable = True
        self._drained = asyncio.Event()
        self._drained.set()
        self._out: list[bytes] = []
        self._out_bytes = 0
        #: True while the frames of one read are delivered: whatever they write here goes
        #: out in one write when the delivery ends (no loop turn is scheduled for it).
        self.delivering = False
        #: Bytes handed to the asyncio transport, and of those the part it had passed on to
        #: the kernel when last checked, and when that last grew: a peer's reading progress.
        self._handed = 0
        self._taken = 0
        self._taken_at = 0.0
        self._write_timer: asyncio.TimerHandle | None = None
        #: Closed or closing: nothing more is delivered.
        self._gone = False
        #: Why this side cut the connection; what waiting writers and requests get.
        self._failure: PeerUnavailable | None = None
        #: Seals each write once the handshake is done (``None``: frames go out as they are).
        self.guard: ConnectionGuard | None = None

    # -- asyncio.Protocol: the peer's reading progress -----------------------------------

    def pause_writing(self) -> None:
        self.writable = False
        self._drained.clear()
        if self._write_timer is None:
            self._taken = self._taken_now()
            self._taken_at = self._loop.time()
            self._write_timer = self._loop.call_later(
                self.shared.write_timeout / _WRITE_CHECKS, self._check_writing
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
        timeout = self.shared.write_timeout
        if now - self._taken_at >= timeout:
            self.shared.counters.slow_reader_cuts += 1
            self._cut(self._write_timed_out())
            return
        delay = min(timeout / _WRITE_CHECKS, self._taken_at + timeout - now)
        self._write_timer = self._loop.call_later(delay, self._check_writing)

    def _write_timed_out(self) -> PeerTimeout:
        return PeerTimeout(
            f"{self.peer!r} did not take data for {self.shared.write_timeout:g}s "
            "(network.write_timeout)"
        )

    def _writing_lost(self) -> None:
        """The connection is gone: stop watching the peer, and wake waiting writers.

        They wake to the connection's failure.
        """
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self.writable = True
        self._drained.set()

    # -- frames out --------------------------------------------------------------------

    def queue(self, kind: int, request_id: int, body: bytes) -> None:
        """Queue a frame without waiting for the peer (answers and one-way frames).

        While the peer is behind (writing paused) the frame waits in the connection's output
        buffer; if that would pass ``max_output_buffer_bytes`` the connection is cut instead.

        :raises PeerUnavailable: the connection is closed, or was cut for this frame.
        """
        transport = self.transport
        if not self.writable and transport is not None:
            queued = self._out_bytes + transport.get_write_buffer_size()
            limit = self.shared.max_output_buffer_bytes
            if queued + len(body) + HEAD.size > limit:
                self.shared.counters.slow_reader_cuts += 1
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
        requests in flight cost one system call, not one each. Those written while a read of
        this connection is delivered go out when that delivery ends (:meth:`delivered`),
        without a callback scheduled for them: the loop's next turn does not have to look
        for events without waiting, a system call per request.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            raise self._failure or PeerUnavailable(f"connection to {self.peer!r} is closed")
        out = self._out
        if not out:
            if not self.delivering:
                self._loop.call_soon(self._flush)
        elif self.guard is not None and self._out_bytes + len(body) > self.shared.max_frame_bytes:
            self._flush()  # a record holds one frame of max_frame_bytes at most
            out = self._out
            if not self.delivering:
                self._loop.call_soon(self._flush)
        out.append(HEAD.pack(len(body) + INNER, kind, request_id))  # framing.head, inlined
        out.append(body)
        self._out_bytes += len(body) + HEAD.size
        self.shared.counters.bytes_sent += len(body)
        if self._out_bytes >= _FLUSH_BYTES:
            # A writer that never yields to the loop must not queue without bound: hand the
            # batch over now, and the transport's high-water mark pauses the next writer.
            self._flush()

    def flush(self) -> None:
        """Write what is queued now rather than at the end of the loop turn."""
        self._flush()

    def delivered(self) -> None:
        """The frames of a read are delivered: write what they queued, in one write.

        While the peer is behind (writing paused), at the end of the loop turn instead, with
        whatever else is queued by then.
        """
        self.delivering = False
        if self._out:
            if self.writable:
                self._flush()
            else:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        self._handed += self._out_bytes
        self._out_bytes = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            data = b"".join(out)
            guard = self.guard
            if guard is not None:
                record = guard.seal(data)
                data = HEAD.pack(len(record) + INNER, RECORD, 0) + record
            transport.write(data)

    async def write(self, kind: int, request_id: int, body: bytes) -> None:
        """Write a frame, waiting up to ``write_timeout`` for the peer to take queued data.

        :raises PeerTimeout: the peer took nothing in time.
        :raises PeerUnavailable: the connection closed meanwhile.
        """
        if not self.writable:
            loop = self._loop
            deadline = loop.time() + self.shared.write_timeout
            while not self.writable:  # woken with other writers, one may have filled it again
                try:
                    await asyncio.wait_for(self._drained.wait(), deadline - loop.time())
                except TimeoutError:
                    raise self._write_timed_out() from None
        self.write_now(kind, request_id, body)

    # -- closing -----------------------------------------------------------------------

    def usable(self) -> bool:
        """Open, and fit for new frames (not past its guard's lifetime)."""
        if self.transport is None or self.transport.is_closing():
            return False
        guard = self.guard
        return guard is None or not guard.expired

    def _cut(self, error: PeerUnavailable) -> None:
        """Close at once because the peer broke a limit or the frame format; counted."""
        self.shared.counters.errors += 1
        self._failure = error
        self.abort()

    def abort(self) -> None:
        """Close at once, dropping what is queued either way."""
        raise NotImplementedError  # the connection knows what else to drop
