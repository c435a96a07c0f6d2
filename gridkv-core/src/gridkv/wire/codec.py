"""Encoding messages to bytes and decoding them back with strict validation.

A message is the msgpack array ``[PROTOCOL_VERSION, TYPE, *fields]``. :func:`decode` refuses
anything else: frames larger than the limit (checked first), bytes that are not msgpack,
trailing bytes, extension types, maps with non-string keys, an unknown version or type, a wrong
number of fields, a field of the wrong type or range. Every such input raises
:class:`~gridkv.base.errors.ProtocolError` and nothing else, so a node can drop a bad frame from a
peer and carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgpack
import msgspec

from gridkv.base._repr import shown
from gridkv.base.errors import ProtocolError
from gridkv.storage.base import Entry
from gridkv.wire import fields as fields_
from gridkv.wire.fields import Validator
from gridkv.wire.messages import MESSAGE_TYPES, Message

__all__ = ["PROTOCOL_VERSION", "DEFAULT_MAX_FRAME_BYTES", "encode", "decode"]

#: 2 since issue 12 (entry records nest the entry; the digests' fingerprint changed); 3 since
#: issue 16 (watched reads and invalidations, lease operations, MutateReply carries the
#: primary's clock).
PROTOCOL_VERSION = 3
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024

#: msgpack as ``msgpack.packb(..., use_bin_type=True)`` writes it, byte for byte, faster.
_pack = msgspec.msgpack.Encoder().encode
_unpackb = msgpack.unpackb
#: What :func:`decode` takes.
_Frame = bytes | bytearray | memoryview


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not allowed in a GridKV message")


def encode(message: Message, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Serialize ``message``.

    The fields are not validated again (the node built them, with the types they declare);
    a value msgpack cannot carry, such as an integer beyond 64 bits or an object of no
    msgpack type, is refused here, and one it can carry but the field's range excludes is
    refused by the receiver's :func:`decode`. (The encoder is msgspec's, which also carries
    a few Python types of its own choosing, such as sets, dataclasses and datetimes; no
    field declares those, and the receiver's :func:`decode` refuses them.)

    :raises ProtocolError: a field cannot be encoded, or the encoded message is larger than
        ``max_frame_bytes``.
    """
    try:
        data = _pack([PROTOCOL_VERSION, message.TYPE, *message.to_fields()])
    except (OverflowError, TypeError, ValueError, RecursionError) as exc:
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

    A frame whose third byte is a known message type (as in ``[version, type, ...]`` with
    fewer than 16 fields and a type below 128) goes straight to that type's decoder, which
    parses it and checks each field in one step (msgspec, see :func:`_frame_decoder`);
    anything else, and anything that decoder refuses, takes the general way, which names
    what is wrong.

    :raises ProtocolError: ``data`` is not exactly one valid message within the size limit.
    """
    size = len(data)
    if size > max_frame_bytes:
        raise ProtocolError(f"frame of {size} bytes exceeds the limit of {max_frame_bytes}")
    if size > 2 and data.__class__ is bytes:  # (other buffers: the general way)
        # The third byte of a frame of a known type is that type (a positive fixint); the
        # decoder it picks checks the rest, and passes anything else to the general way.
        decoder = _BY_TYPE[data[2]]
        if decoder is not None:
            return decoder(data)
    return _decode_general(data)


def _decode_general(data: bytes | bytearray | memoryview) -> Message:
    """:func:`decode` the general way: parse, then name what is wrong, or check the fields.

    :raises ProtocolError: ``data`` is not exactly one valid message.
    """
    if len(data) == 0:
        raise ProtocolError("empty frame")
    raw = _unpack(data)
    if type(raw) is list and len(raw) >= 2:
        version, mtype = raw[0], raw[1]
        if type(version) is int and version == PROTOCOL_VERSION and type(mtype) is int:
            spec = _DECODERS.get(mtype)
            if spec is not None and len(raw) == spec[0]:
                return spec[1](raw)
    raise _refusal(raw)


def _unpack(data: bytes | bytearray | memoryview) -> Any:
    """``data`` parsed as one msgpack object.

    :raises ProtocolError: it is not one (or it holds an extension type).
    """
    try:
        return _unpackb(data, raw=False, use_list=True, strict_map_key=True, ext_hook=_no_ext)
    except Exception as exc:
        raise _not_msgpack(exc) from None


def _not_msgpack(exc: Exception) -> ProtocolError:
    """The error for bytes msgpack refused with ``exc`` (which may be one already)."""
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, msgpack.ExtraData):
        return ProtocolError("trailing bytes after the message")
    if isinstance(exc, ValueError | TypeError | OverflowError | msgpack.UnpackException):
        return ProtocolError(f"not a msgpack message: {type(exc).__name__}: {exc}")
    # msgpack may raise others on hostile input (RecursionError...); never let them out
    return ProtocolError(f"not a msgpack message: {type(exc).__name__}")


def _refusal(raw: Any) -> ProtocolError:
    """Why ``raw`` (decoded msgpack) is not a message: its shape, version, type or arity."""
    if type(raw) is not list or len(raw) < 2:
        return ProtocolError("a message must be an array [version, type, fields...]")
    version, mtype = raw[0], raw[1]
    if version != PROTOCOL_VERSION or type(version) is not int:
        return ProtocolError(
            f"unsupported protocol version {shown(version)}; this node speaks {PROTOCOL_VERSION}"
        )
    cls = MESSAGE_TYPES.get(mtype) if type(mtype) is int else None
    if cls is None:
        return ProtocolError(f"unknown message type {shown(mtype)}")
    return ProtocolError(
        f"{cls.__name__} has {len(cls.FIELDS)} fields, the frame carries {len(raw) - 2}"
    )


#: The simple validators, checked inline by a generated decoder (the validator itself runs
#: only to raise its error): ``{v}`` is the value.
_INLINE: dict[Validator, str] = {
    fields_.u64: "type({v}) is int and 0 <= {v} <= 18446744073709551615",
    fields_.u32: "type({v}) is int and 0 <= {v} <= 4294967295",
    fields_.text: "type({v}) is str",
    fields_.node_id: "type({v}) is str and 0 < len({v}) <= 255",
    fields_.key: f"type({{v}}) is str and 0 < len({{v}}) <= {fields_.MAX_KEY_BYTES_ON_WIRE}",
    fields_.blob: "type({v}) is bytes",
    fields_.flag: "type({v}) is bool",
    fields_.address: "type({v}) is str and 0 < len({v}) <= 1024",
}


def _decoder(cls: type[Message]) -> Callable[[list[Any]], Message]:
    """A function that validates ``cls``'s fields in one step and builds the message.

    Generated per type, so the common case costs no call per simple field and no name
    formatting: each field's name is a constant, and its validator runs (and raises) only
    when the inline check fails. The checks are exactly the validators' (the tests compare
    both on every kind of bad input).
    """
    names = [f"f{i}" for i in range(len(cls.FIELDS))]
    scope: dict[str, Any] = {"cls": cls, "new": object.__new__}
    lines = ["def decode(raw):", f"    _, _, {''.join(n + ', ' for n in names)}= raw"]
    lines += _checks_and_build(cls, scope)
    exec("\n".join(lines), scope)  # the code is built above from the message classes
    decode: Callable[[list[Any]], Message] = scope["decode"]
    return decode


#: A field's wire type as msgspec checks it, for the validators that are exactly such a type
#: (the validator runs only on what msgspec took as ``Any``).
_U32 = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]
_U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgpack carries no larger integer
_KEY = Annotated[str, msgspec.Meta(min_length=1, max_length=fields_.MAX_KEY_BYTES_ON_WIRE)]
_NODE_ID = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
#: An entry record: msgspec checks the entry against Entry's own annotations as it builds it.
_RECORD = tuple[_U32, Entry]
_WIRE_TYPES: dict[Validator, Any] = {
    fields_.u64: _U64,
    fields_.u32: _U32,
    fields_.text: str,
    fields_.node_id: _NODE_ID,
    fields_.key: _KEY,
    fields_.blob: bytes,
    fields_.flag: bool,
    fields_.address: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)],
    fields_.optional_entry: _RECORD | None,
    fields_.entry_list: list[_RECORD],
}


def _frame_decoder(
    cls: type[Message], general: Callable[[_Frame], Message]
) -> Callable[[_Frame], Message]:
    """A function that parses and checks a frame that announces a ``cls`` (its third byte).

    msgspec parses the frame and checks the header and every field of a wire type it can
    check itself (:data:`_WIRE_TYPES`) in one C call; the validators of the other fields
    run on what it parsed. A frame it refuses goes the ``general`` way, which refuses it
    too, naming what is wrong as it always has (the tests hold the two to the same
    answers); none of its errors leaves here.
    """
    types: list[Any] = [Literal[PROTOCOL_VERSION], Literal[cls.TYPE]]
    scope: dict[str, Any] = {
        "cls": cls,
        "new": object.__new__,
        "general": general,
    }
    names = [f"f{i}" for i in range(len(cls.FIELDS))]
    lines = [
        "def decode(data):",
        "    try:",
        f"        _, _, {''.join(n + ', ' for n in names)}= parse(data)",
        "    except Exception:",
        "        return general(data)",
    ]
    for i, (name, check) in enumerate(cls.FIELDS):
        wire_type = _WIRE_TYPES.get(check, Any)
        types.append(wire_type)
        if wire_type is Any:
            scope[f"check{i}"] = check
            lines.append(f"    f{i} = check{i}(f{i}, {f'{cls.__name__}.{name}'!r})")
    scope["parse"] = msgspec.msgpack.Decoder(tuple[tuple(types)]).decode  # type: ignore[misc]
    lines += _build(cls, scope)
    exec("\n".join(lines), scope)  # the code is built above from the message classes
    decode: Callable[[_Frame], Message] = scope["decode"]
    return decode


def _checks_and_build(cls: type[Message], scope: dict[str, Any]) -> list[str]:
    """The generated lines that check ``f0``, ``f1``..., then make and return the ``cls``."""
    lines = []
    for i, (name, check) in enumerate(cls.FIELDS):
        scope[f"check{i}"] = check
        field = f"{cls.__name__}.{name}"
        inline = _INLINE.get(check)
        if inline is None:
            lines.append(f"    f{i} = check{i}(f{i}, {field!r})")
        else:
            condition = inline.format(v=f"f{i}")
            lines.append(f"    if not ({condition}):")
            lines.append(f"        check{i}(f{i}, {field!r})")
    return lines + _build(cls, scope)


def _build(cls: type[Message], scope: dict[str, Any]) -> list[str]:
    """The generated lines that make and return the ``cls`` of the checked ``f0``, ``f1``..."""
    lines = ["    message = new(cls)"]
    for i, (name, _) in enumerate(cls.FIELDS):
        # The slot's own setter: what the frozen __init__ does, without its detour.
        scope[f"set{i}"] = cls.__dict__[name].__set__
        lines.append(f"    set{i}(message, f{i})")
    lines.append("    return message")
    return lines


#: Each message type's array length (version, type, fields) and generated decoder.
_DECODERS: dict[int, tuple[int, Callable[[list[Any]], Message]]] = {
    code: (len(cls.FIELDS) + 2, _decoder(cls)) for code, cls in MESSAGE_TYPES.items()
}


#: A frame's third byte -> the decoder of the message type it announces (``None``: none).
_BY_TYPE: tuple[Callable[[_Frame], Message] | None, ...] = (
    tuple(
        _frame_decoder(MESSAGE_TYPES[code], _decode_general) if code in MESSAGE_TYPES else None
        for code in range(128)
    )
    + (None,) * 128
)
