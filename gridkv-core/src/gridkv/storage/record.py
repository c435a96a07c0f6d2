"""The memory backend's record: one ``bytes`` object per stored key.

::

    flags:u8 | version:u64 | writer:u32 | [expires_at:u64 when FLAG_TTL] | value

``writer`` is a slot of the shard's :class:`~gridkv.storage.writers.WriterTable`. A plain value
(no TTL, not compressed, not a tombstone) has flags 0, so its value is ``record[HEADER_SIZE:]``
after a one-byte test: the path a local read takes, inlined by the backend.
"""

from __future__ import annotations

import struct

import lz4.block

from gridkv.storage.base import Entry

__all__ = [
    "FLAG_COMPRESSED",
    "FLAG_TOMBSTONE",
    "FLAG_TTL",
    "HEADER",
    "HEADER_SIZE",
    "TTL_HEADER_SIZE",
    "encode",
    "expires_at",
    "payload",
    "to_entry",
    "value_of",
]

#: The record carries ``expires_at`` after its header.
FLAG_TTL = 1
#: The record is a tombstone: it has no value.
FLAG_TOMBSTONE = 2
#: The value is lz4-compressed (block format, with its size).
FLAG_COMPRESSED = 4

#: ``flags, version, writer slot``.
HEADER = struct.Struct("<BQI")
_EXPIRY = struct.Struct("<Q")
#: Where the value starts in a record without ``FLAG_TTL`` (13).
HEADER_SIZE = HEADER.size
#: Where the value starts in a record with ``FLAG_TTL`` (21).
TTL_HEADER_SIZE = HEADER_SIZE + _EXPIRY.size

_pack = HEADER.pack
_pack_expiry = _EXPIRY.pack
_unpack_expiry = _EXPIRY.unpack_from


def payload(value: bytes | None, compress_at: int) -> tuple[int, bytes]:
    """The flags and stored bytes of a value: compressed when that is smaller.

    :param compress_at: values at least this long are tried compressed; 0 never.
    """
    if value is None:
        return FLAG_TOMBSTONE, b""
    if compress_at and len(value) >= compress_at:
        packed = lz4.block.compress(value, store_size=True)
        if len(packed) < len(value):
            return FLAG_COMPRESSED, packed
    return 0, value


def encode(flags: int, version: int, wid: int, expires: int, stored: bytes) -> bytes:
    """A record of ``stored`` bytes (from :func:`payload`); ``expires`` 0 for never."""
    if expires:
        return _pack(flags | FLAG_TTL, version, wid) + _pack_expiry(expires) + stored
    return _pack(flags, version, wid) + stored


def expires_at(record: bytes) -> int:
    """The record's expiry in milliseconds, 0 for never."""
    if record[0] & FLAG_TTL:
        expires: int = _unpack_expiry(record, HEADER_SIZE)[0]
        return expires
    return 0


def value_of(record: bytes) -> bytes | None:
    """The value a record holds, decompressed; ``None`` for a tombstone (expiry not judged)."""
    flags = record[0]
    if flags & FLAG_TOMBSTONE:
        return None
    stored = record[TTL_HEADER_SIZE if flags & FLAG_TTL else HEADER_SIZE :]
    if flags & FLAG_COMPRESSED:
        return bytes(lz4.block.decompress(stored))
    return stored


def to_entry(key: str, record: bytes, writer: str) -> Entry:
    """The :class:`Entry` a record stands for; ``writer`` is its slot's node id."""
    return Entry(key, value_of(record), HEADER.unpack_from(record)[1], writer, expires_at(record))
