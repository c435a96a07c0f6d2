"""Length-prefixed framing for stream transports.

A frame on a stream is a 4-byte big-endian length followed by that many bytes. The length is
checked against the limit as soon as its 4 bytes have arrived, before any buffer for the body
is set aside, so a peer cannot make a node allocate more than ``max_frame_bytes``.
"""

from __future__ import annotations

import struct

from gridkv.base.errors import ProtocolError

__all__ = ["FrameDecoder", "frame", "LENGTH_PREFIX"]

_LEN = struct.Struct(">I")
LENGTH_PREFIX = _LEN.size


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length."""
    return _LEN.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into frames.

    Feed it whatever arrives; it returns the complete frames and keeps the rest.

    :raises ProtocolError: from :meth:`feed` when a frame announces more than
        ``max_frame_bytes`` or zero bytes; the stream cannot be resynchronised after that
        and the connection must be closed.
    """

    __slots__ = ("_buf", "_max")

    def __init__(self, max_frame_bytes: int) -> None:
        self._max = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames now complete, in order."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= LENGTH_PREFIX:
            (length,) = _LEN.unpack_from(buf, pos)
            if length > self._max:
                raise ProtocolError(
                    f"peer announced a frame of {length} bytes, more than the limit of "
                    f"{self._max} (network.max_frame_bytes)"
                )
            if length == 0:
                raise ProtocolError("peer sent an empty frame")
            if end - pos - LENGTH_PREFIX < length:
                break
            start = pos + LENGTH_PREFIX
            out.append(bytes(buf[start : start + length]))
            pos = start + length
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)
