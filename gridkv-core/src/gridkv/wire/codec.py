"""Encoding messages to bytes and decoding them back with strict validation.

A message is the msgpack array ``[PROTOCOL_VERSION, TYPE, *fields]``. :func:`decode` refuses
anything else: frames larger than the limit (checked first), bytes that are not msgpack,
trailing bytes, extension types, maps with non-string keys, an unknown version or type, a wrong
number of fields, a field of the wrong type or range. Every such input raises
:class:`~gridkv.base.errors.ProtocolError` and nothing else, so a node can drop a bad frame from a
peer and carry on.
"""

from __future__ import annotations

from typing import Any

import msgpack

from gridkv.base._repr import shown
from gridkv.base.errors import ProtocolError
from gridkv.wire.messages import MESSAGE_TYPES, Message

__all__ = ["PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_BYTES", "encode", "decode"]

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

_packb = msgpack.packb


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed in a GridKV message")


def encode(message: Message, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Serialize ``message``.

    The fields are not validated again (the node built them); a value msgpack cannot carry,
    such as an integer beyond 64 bits, is refused here, and one it can carry but the field's
    range excludes is refused by the receiver's :func:`decode`.

    :raises ProtocolError: a field cannot be encoded, or the encoded message is larger than
        ``max_frame_bytes``.
    """
    try:
        data: bytes = _packb(
            [PROTOCOL_VERSION, message.TYPE, *message.to_fields()], use_bin_type=True
        )
    except (OverflowError, TypeError, ValueError) as exc:
        # msgpack's own errors (an integer out of its range, a type it cannot pack) become
        # the codec's, so callers handle one exception for "this message cannot be sent".
        raise ProtocolError(f"{type(message).__name__} cannot be encoded: {exc}") from None
    if len(data) > max_frame_bytes:
        raise ProtocolError(
            f"{type(message).__name__} encodes to {len(data)} bytes, more than the frame "
            f"limit of {max_frame_bytes} (network.max_frame_bytes)"
        )
    return data


def decode(
    data: bytes | bytearray | memoryview, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> Message:
    """Parse and validate one message.

    :raises ProtocolError: ``data`` is not exactly one valid message within the size limit.
    """
    size = len(data)
    if size > max_frame_bytes:
        raise ProtocolError(f"frame of {size} bytes exceeds the limit of {max_frame_bytes}")
    if size == 0:
        raise ProtocolError("empty frame")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_no_ext,
        )
    except ProtocolError:
        raise
    except msgpack.ExtraData:
        raise ProtocolError("trailing bytes after the message") from None
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException, RecursionError) as exc:
        raise ProtocolError(f"not a msgpack message: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # msgpack may raise others on hostile input; never let them out
        raise ProtocolError(f"not a msgpack message: {type(exc).__name__}") from None
    if type(raw) is not list or len(raw) < 2:
        raise ProtocolError("a message must be an array [version, type, fields...]")
    version, mtype = raw[0], raw[1]
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise ProtocolError(
            f"unsupported protocol version {shown(version)}; this node speaks {PROTOCOL_VERSION}"
        )
    cls = MESSAGE_TYPES.get(mtype) if type(mtype) is int else None
    if cls is None:
        raise ProtocolError(f"unknown message type {shown(mtype)}")
    fields = raw[2:]
    if len(fields) != len(cls.FIELDS):
        raise ProtocolError(
            f"{cls.__name__} has {len(cls.FIELDS)} fields, the frame carries {len(fields)}"
        )
    values = {
        name: check(value, f"{cls.__name__}.{name}")
        for (name, check), value in zip(cls.FIELDS, fields, strict=True)
    }
    return cls(**values)
