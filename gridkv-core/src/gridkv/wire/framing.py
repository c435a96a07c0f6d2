"""Stream framing, sans-I/O: the frame format of every stream transport, and its reader.

A frame is ``length:u32 | kind:u8 | request id:u64 | body``, big-endian; ``length`` counts the
kind, the id and the body. Kinds are a request, its response (same id), a one-way message, a
connection's hello (or its reply), and a *record*: on a connection a handshake protects, every
frame after the hellos travels inside a record, whose body is the sealed bytes of whole frames
(what one side wrote in one turn of its loop; :class:`~gridkv.transport.base.ConnectionGuard`).
The TCP transport speaks it on each connection, and a transport over another stream (a QUIC
stream, say) speaks it on each of its streams.

:class:`FrameReader` splits a received byte stream into frames and refuses a bad length or kind
as soon as those bytes arrive, before any body is buffered, so a peer cannot make a node hold
more than one frame of ``max_frame_bytes`` per stream. It does no I/O and reads no clock: the
transport feeds it what the socket gave and the time, and asks it how much it holds and since
when (for an inbound budget and a frame deadline).
"""

from __future__ import annotations

import struct

from gridkv.base.errors import ProtocolError

__all__ = [
    "HEAD",
    "HELLO",
    "INNER",
    "ONE_WAY",
    "RECORD",
    "RECORD_SLACK",
    "REQUEST",
    "RESPONSE",
    "Frame",
    "FrameReader",
    "head",
]

#: length (of kind + id + body), kind, request id.
HEAD = struct.Struct(">IBQ")
#: The bytes ``length`` counts besides the body: kind and request id.
INNER = HEAD.size - 4
#: Frame kinds: a request, its response (same id), a one-way message, a connection's hello,
#: a record of sealed frames.
REQUEST, RESPONSE, ONE_WAY, HELLO, RECORD = 0, 1, 2, 3, 4
#: What a record's body may hold beyond one frame body of ``max_frame_bytes``: that frame's
#: header and the record's authentication (a tag, and room to spare).
RECORD_SLACK = HEAD.size + 64

_LENGTH = struct.Struct(">I")

#: ``(kind, request_id, body)``
Frame = tuple[int, int, bytes]


def head(kind: int, request_id: int, body_size: int) -> bytes:
    """The header of a frame whose body is ``body_size`` bytes (the body follows it)."""
    return HEAD.pack(body_size + INNER, kind, request_id)


class FrameReader:
    """Splits one stream's inbound bytes into frames.

    It holds at most one unfinished frame: what :meth:`feed` returns is every frame completed
    so far, in order, and the bytes kept are those of the frame still arriving. A frame whose
    body is longer than ``max_frame_bytes`` or whose kind is unknown raises
    :class:`~gridkv.base.errors.ProtocolError` as soon as its length or kind is in; the stream
    cannot be resynchronised after that, so the reader is done (the stream is closed, and
    frames completed in the same :meth:`feed` call are dropped with it).
    """

    __slots__ = ("_buffer", "_limit", "started")

    def __init__(self, max_frame_bytes: int) -> None:
        self._limit = max_frame_bytes + INNER
        self._buffer = bytearray()
        #: When the first byte of the unfinished frame arrived (the ``now`` of that
        #: :meth:`feed`); ``None`` when no frame is in progress.
        self.started: float | None = None

    @property
    def buffered(self) -> int:
        """Bytes held of the unfinished frame (0 between frames)."""
        return len(self._buffer)

    def feed(self, data: bytes, now: float) -> list[Frame]:
        """Add received bytes; return the frames now complete, in order.

        :param now: the current time, which becomes :attr:`started` when a frame begins here.
        :raises ProtocolError: a frame announces a body over ``max_frame_bytes``, a length too
            short for its header, or an unknown kind.
        """
        buffer = self._buffer
        continuing = bool(buffer)
        view: bytes | bytearray = data
        if continuing:
            buffer += data
            view = buffer
        frames: list[Frame] = []
        pos = 0
        end = len(view)
        limit = self._limit
        while end - pos >= 4:
            (length,) = _LENGTH.unpack_from(view, pos)
            if length > limit or length < INNER:
                raise ProtocolError(
                    f"peer announced a frame of {length} bytes; frames hold {INNER} to {limit} "
                    "(network.max_frame_bytes)"
                )
            stop = pos + 4 + length
            if stop > end:
                if end - pos > 4 and view[pos + 4] > RECORD:
                    raise ProtocolError(f"peer sent a frame of unknown kind {view[pos + 4]}")
                break
            _, kind, request_id = HEAD.unpack_from(view, pos)
            if kind > RECORD:
                raise ProtocolError(f"peer sent a frame of unknown kind {kind}")
            frames.append((kind, request_id, bytes(view[pos + HEAD.size : stop])))
            pos = stop
        if continuing:
            if pos:
                del buffer[:pos]
        elif pos < end:
            buffer += memoryview(data)[pos:]
        if not buffer:
            self.started = None
        elif pos or not continuing:  # the unfinished frame began in this data
            self.started = now
        return frames

    def postpone(self, now: float) -> None:
        """Restart the unfinished frame's clock at ``now``.

        For a receiver that stopped reading for a while (back-pressure of its own): that time
        was not the peer's to send in.
        """
        if self.started is not None:
            self.started = now

    def clear(self) -> None:
        """Drop the unfinished frame (the stream has ended)."""
        self._buffer = bytearray()
        self.started = None
