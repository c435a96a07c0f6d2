"""The snapshot file: what :class:`~gridkv_storage_snapshot.SnapshotStorage` writes and reads.

::

    magic (8 bytes) | msgpack: header map, record, record, ..., nil | count u64 | crc32 u32

The header map has ``format``, ``node_id``, ``partition_count``, ``as_of_ms`` (deletes made
in the cluster before this moment are in the file, see the storage's documentation) and
``written_ms``. Each record is ``[partition, key, value, version, writer, expires_at]``, with
``nil`` as the value of a tombstone. The trailer holds the number of records and the CRC-32 of
everything before it: a file is checked whole before a single record is used, and one that
fails (damaged, truncated, not a snapshot) is refused whole with :class:`SnapshotError`.

A snapshot is written to ``<name>.tmp`` (mode 0600), flushed to disk, and renamed over the
file: a crash while writing leaves the previous snapshot as it was.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
from gridkv import GridKVError
from gridkv.storage import Entry

__all__ = ["FORMAT", "MAGIC", "Header", "SnapshotError", "SnapshotReader", "write_snapshot"]

#: The first bytes of every snapshot file.
MAGIC = b"GKVSNAP\x01"
#: The version of the layout above.
FORMAT = 1
#: ``count, crc32``.
_TRAILER = struct.Struct("<QI")
_CHUNK = 1 << 20


class SnapshotError(GridKVError):
    """A snapshot file could not be written, or read back (the message names the file)."""


@dataclass(frozen=True, slots=True)
class Header:
    """What a snapshot says about itself.

    :ivar node_id: the node that wrote it.
    :ivar partition_count: the partitions its records are numbered in.
    :ivar as_of_ms: the records hold every delete the cluster made before this time (ms).
    :ivar written_ms: when it was written (ms).
    """

    node_id: str
    partition_count: int
    as_of_ms: int
    written_ms: int


def write_snapshot(path: Path, header: Header, records: Iterable[tuple[int, Entry]]) -> int:
    """Write ``records`` (``(partition, entry)``) to ``path`` atomically; return how many.

    :raises OSError: the file could not be written; the previous one, if any, is untouched.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=_CHUNK) as file:
            count = _write(file, header, records)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_directory(path.parent)
    return count


def _write(file: BinaryIO, header: Header, records: Iterable[tuple[int, Entry]]) -> int:
    pack = msgpack.Packer(use_bin_type=True).pack
    crc = 0

    def put(data: bytes) -> None:
        nonlocal crc
        file.write(data)
        crc = zlib.crc32(data, crc)

    put(MAGIC)
    put(
        pack(
            {
                "format": FORMAT,
                "node_id": header.node_id,
                "partition_count": header.partition_count,
                "as_of_ms": header.as_of_ms,
                "written_ms": header.written_ms,
            }
        )
    )
    count = 0
    for partition, e in records:
        put(pack([partition, e.key, e.value, e.version, e.writer, e.expires_at]))
        count += 1
    put(pack(None))
    file.write(_TRAILER.pack(count, crc))
    return count


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotReader:
    """A snapshot file, checked whole when opened; then its :meth:`records`, one by one.

    :param path: the file.
    :param max_record_bytes: the largest record to accept (a value and its key).
    :raises FileNotFoundError: there is no snapshot.
    :raises OSError: it cannot be read.
    :raises SnapshotError: it is damaged, truncated or not a snapshot.
    """

    def __init__(self, path: Path, max_record_bytes: int) -> None:
        self.path = path
        self._max = max_record_bytes
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close() / the with block
        try:
            self._count = self._check()
            self._unpacker = self._objects()
            self.header = self._header(self._next())
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def _bad(self, why: str) -> SnapshotError:
        return SnapshotError(f"snapshot {str(self.path)!r} is not usable: {why}")

    def _check(self) -> int:
        """Check the magic, the trailer and the CRC of the whole file; the record count."""
        file = self._file
        size = os.fstat(file.fileno()).st_size
        if size < len(MAGIC) + _TRAILER.size or file.read(len(MAGIC)) != MAGIC:
            raise self._bad("it does not start as a GridKV snapshot")
        body = size - _TRAILER.size
        file.seek(0)
        crc = 0
        left = body
        while left:
            chunk = file.read(min(_CHUNK, left))
            if not chunk:
                raise self._bad("it is shorter than it was a moment ago")
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
        count, stored = _TRAILER.unpack(file.read(_TRAILER.size))
        if crc != stored:
            raise self._bad("its checksum does not match (damaged or truncated)")
        file.seek(len(MAGIC))
        return int(count)

    def _objects(self) -> Any:
        return msgpack.Unpacker(
            self._file,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_buffer_size=max(self._max * 2, 8 << 20),
        )

    def _next(self) -> Any:
        try:
            return next(self._unpacker)
        except StopIteration:
            raise self._bad("it ends before its last record") from None
        except (ValueError, msgpack.UnpackException) as exc:
            raise self._bad(f"a record cannot be decoded ({exc})") from None

    def _header(self, raw: Any) -> Header:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise self._bad(f"its header is not one of format {FORMAT}")
        try:
            header = Header(
                raw["node_id"], raw["partition_count"], raw["as_of_ms"], raw["written_ms"]
            )
        except KeyError as exc:
            raise self._bad(f"its header has no {exc.args[0]!r}") from None
        if not isinstance(header.node_id, str) or not all(
            isinstance(n, int) and n >= 0
            for n in (header.partition_count, header.as_of_ms, header.written_ms)
        ):
            raise self._bad("its header holds values of the wrong type")
        return header

    def records(self) -> Iterator[tuple[int, Entry]]:
        """Each ``(partition, entry)`` in the file.

        :raises SnapshotError: a record is malformed (the file was checked whole when opened,
            so only a file not written by this module gets here).
        """
        for _ in range(self._count):
            raw = self._next()
            if not (isinstance(raw, list) and len(raw) == 6):
                raise self._bad("a record is not [partition, key, value, version, writer, expiry]")
            partition, key, value, version, writer, expires = raw
            if not (
                isinstance(partition, int)
                and 0 <= partition < self.header.partition_count
                and isinstance(key, str)
                and key
                and (value is None or isinstance(value, bytes))
                and isinstance(version, int)
                and version >= 0
                and isinstance(writer, str)
                and writer
                and isinstance(expires, int)
                and expires >= 0
            ):
                raise self._bad(f"a record holds values of the wrong type ({str(key)!r:.80})")
            yield partition, Entry(key, value, version, writer, expires)
        if self._next() is not None:
            raise self._bad("it holds more records than its trailer counts")
