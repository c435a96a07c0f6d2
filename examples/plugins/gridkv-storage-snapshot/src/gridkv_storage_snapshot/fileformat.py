"""The snapshot file: what :class:`~gridkv_storage_snapshot.SnapshotStorage` writes and reads.

::

    magic (8 bytes) | msgpack: header map, record, record, ..., nil | count u64 | crc32 u32

The header map has ``format``, ``node_id``, ``partition_count``, ``as_of_ms`` (deletes made
in the cluster before this moment are in the file, see the storage's documentation) and
``written_ms``. Each record is ``[partition, key, value, version, writer, expires_at]``, with
``nil`` as the value of a tombstone. The trailer holds the number of records and the CRC-32 of
everything before it: a file is checked whole before a single record is used, and one that
fails (damaged, truncated, not a snapshot) is refused whole with :class:`SnapshotError`.

A snapshot is written to a new file of its own beside it, ``<name>.<random>.tmp`` (created
exclusively, mode 0600, never through a symbolic link), flushed to disk, and renamed over the
file: a crash while writing leaves the previous snapshot as it was, and two writers never
write into one file. A snapshot is read only from a regular file, opened without following a
symbolic link and without blocking (a FIFO put at its name is refused, not waited on).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
from gridkv import GridKVError
from gridkv.storage import Entry

__all__ = [
    "FORMAT",
    "MAGIC",
    "Header",
    "SnapshotError",
    "SnapshotReader",
    "temporary_names",
    "write_snapshot",
]

#: The first bytes of every snapshot file.
MAGIC = b"GKVSNAP\x01"
#: The version of the layout above.
FORMAT = 1
#: ``count, crc32``.
_TRAILER = struct.Struct("<QI")
_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TMP = ".tmp"


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

    The records go to a new file of this write's own, ``<name>.<random>.tmp``, created with
    ``O_EXCL`` and ``O_NOFOLLOW`` (a file or a link already at that name is never written
    through), flushed to disk and renamed over ``path``.

    :raises OSError: the file could not be written; the previous one, if any, is untouched.
    """
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}{_TMP}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    fd = os.open(tmp, flags, 0o600)
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


def temporary_names(path: Path) -> list[str]:
    """The names of the temporary files writes of ``path`` left beside it (a crash's)."""
    prefix = path.name + "."
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    return sorted(
        n
        for n in names
        if n.startswith(prefix) and n.endswith(_TMP) and len(n) > len(prefix) + len(_TMP)
    )


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

    The file is opened without following a symbolic link (``O_NOFOLLOW``: a link is an
    ``OSError``, ``ELOOP``) and without blocking, and :func:`os.fstat` of the open file is
    looked at before a byte is read: ``check`` first, then it must be a regular file.

    :param path: the file.
    :param max_record_bytes: the largest record to accept (a value and its key).
    :param check: called with the open file's status before it is read; may raise to
        refuse it (the storage checks its owner and mode).
    :raises FileNotFoundError: there is no snapshot.
    :raises OSError: it cannot be read, or it is a symbolic link.
    :raises SnapshotError: it is not a regular file, or it is damaged, truncated or not a
        snapshot.
    """

    def __init__(
        self,
        path: Path,
        max_record_bytes: int,
        *,
        check: Callable[[os.stat_result], None] | None = None,
    ) -> None:
        self.path = path
        self._max = max_record_bytes
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
        try:
            #: The status of the open file (owner, mode, size), as it was when opened.
            self.stat = os.fstat(fd)
            if check is not None:
                check(self.stat)
            if not stat.S_ISREG(self.stat.st_mode):
                raise self._bad("it is not a regular file")
            if _NONBLOCK:
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        self._file = os.fdopen(fd, "rb")
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
