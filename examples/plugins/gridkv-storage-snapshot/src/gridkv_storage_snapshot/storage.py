"""``SnapshotStorage``: the built-in memory backend, written to a file and read back on start.

Everything a node stores is kept by :class:`~gridkv.storage.MemoryStorage` (records, memory
accounting, eviction, tombstones, digests, the sweep), unchanged; this subclass only adds the
file. A node writes its snapshot when it begins to close (before it hands its partitions to
other nodes: the plugin's ``gridkv_node_stopping`` hook), or when its storage closes if that
hook did not run, and reads it when it is built again under the same ``local_node_id``.

Deletes stay deleted. A snapshot holds old values; a value whose key the cluster deleted
while this node was down must not come back from it. The cluster keeps a delete's tombstone
for at least ``tombstone_ttl``, so a snapshot is used only while its *as-of* time (the moment
its records were known to hold every delete) is younger than ``tombstone_ttl`` minus
``handoff_timeout`` (a margin for deletes still on their way to this node when it wrote the
file). Records loaded from a snapshot keep its as-of time until the node has run, joined,
for twice ``handoff_timeout`` (anti-entropy and handoff have brought it up to date by then);
a snapshot written before that carries the older time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from gridkv import ConfigError, MemoryLimitExceeded
from gridkv.base.log import LOGGER_NAME
from gridkv.storage import Entry, MemoryStorage

from gridkv_storage_snapshot.fileformat import (
    Header,
    SnapshotError,
    SnapshotReader,
    write_snapshot,
)

if TYPE_CHECKING:
    from gridkv import Options

__all__ = ["DIR_ENV", "SnapshotStorage", "snapshot_path"]

#: The environment variable naming the directory snapshots are kept in.
DIR_ENV = "GRIDKV_SNAPSHOT_DIR"

log = logging.getLogger(LOGGER_NAME)


def _wall() -> float:
    return time.time()


def snapshot_path(directory: str | os.PathLike[str], node_id: str) -> Path:
    """The snapshot file of node ``node_id`` in ``directory``.

    The node id is percent-encoded into the name (a long one is hashed), so any id makes
    one plain file name.
    """
    name = quote(node_id, safe="")
    if len(name) > 200:
        name = hashlib.sha256(node_id.encode()).hexdigest()
    return Path(directory) / f"node-{name}.snapshot"


def _directory_from_env() -> Path:
    """The snapshot directory ``GRIDKV_SNAPSHOT_DIR`` names, created when missing.

    :raises ConfigError: the variable is not set, or names something that is not a
        directory this process can write.
    """
    raw = os.environ.get(DIR_ENV, "")
    if not raw:
        raise ConfigError(
            f"storage.backend 'snapshot' keeps its file in the directory {DIR_ENV} names; "
            f"set {DIR_ENV} (for example to /var/lib/gridkv)"
        )
    directory = Path(raw)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"storage.backend 'snapshot': {DIR_ENV}={raw!r} is not a directory this node can "
            f"make or use: {exc.strerror}"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(
            f"storage.backend 'snapshot': {DIR_ENV}={raw!r} is not writable by this process"
        )
    return directory


class SnapshotStorage(MemoryStorage):
    """The memory backend, with its records written to ``path`` and read back when built.

    :param path: the snapshot file (read now if it exists; written by :meth:`snapshot`).
    :param partition_count: number of partitions (the node's ``partition_count``); a snapshot
        of another count is not used.
    :param node_id: the node this storage belongs to (written in the file).
    :param max_age: seconds a snapshot's as-of time may lie in the past for it to be used
        (``tombstone_ttl - handoff_timeout``); 0 or less never uses one.
    :param settle: seconds the node runs before loaded records count as up to date
        (``2 * handoff_timeout``).
    :param max_record_bytes: the largest record a snapshot may hold.
    :param clock: wall time in seconds (the node's clock).
    :param max_bytes: memory limit in bytes, 0 for none (as :class:`MemoryStorage`).
    :param shard_count: as :class:`MemoryStorage`.
    :param eviction: as :class:`MemoryStorage`.
    :param compression_threshold: as :class:`MemoryStorage`.
    :raises ConfigError: the snapshot cannot be read (permissions), or another storage in
        this or another process uses the same file.
    """

    name = "snapshot"

    def __init__(
        self,
        path: str | os.PathLike[str],
        partition_count: int = 1024,
        *,
        node_id: str = "",
        max_age: float = 3570.0,
        settle: float = 60.0,
        max_record_bytes: int = 8 << 20,
        clock: Callable[[], float] | None = None,
        max_bytes: int = 0,
        shard_count: int = 32,
        eviction: str = "none",
        compression_threshold: int = 1024,
    ) -> None:
        super().__init__(
            partition_count,
            max_bytes=max_bytes,
            shard_count=shard_count,
            eviction=eviction,
            compression_threshold=compression_threshold,
            clock=clock,
        )
        #: The snapshot file.
        self.path = Path(path)
        #: The node whose records these are.
        self.node_id = node_id
        self._partition_count = partition_count
        self._wall = clock or _wall
        self._max_age_ms = int(max_age * 1000)
        self._settle_ms = int(settle * 1000)
        self._max_record = max_record_bytes
        self._lock_fd = self._lock()
        #: The as-of time of the loaded records until they count as up to date; else None.
        self._loaded_as_of: int | None = None
        self._started_ms: int | None = None
        self._final = False
        self._closed = False
        #: Records read from the snapshot when this storage was built.
        self.loaded = 0
        try:
            self.loaded = self._load()
        except BaseException:
            self._unlock()
            raise

    @classmethod
    def from_options(
        cls, options: Options, *, clock: Callable[[], float] | None = None
    ) -> SnapshotStorage:
        """Build the backend of a node: its file in ``$GRIDKV_SNAPSHOT_DIR``, named by its id.

        :raises ConfigError: ``GRIDKV_SNAPSHOT_DIR`` is not set or not a writable directory.
        """
        s = options.storage
        return cls(
            snapshot_path(_directory_from_env(), options.local_node_id),
            options.partition_count,
            node_id=options.local_node_id,
            max_age=options.tombstone_ttl - options.handoff_timeout,
            settle=2 * options.handoff_timeout,
            max_record_bytes=options.max_value_bytes + 4 * options.max_key_bytes + 1024,
            clock=clock,
            max_bytes=s.max_memory_mb << 20,
            shard_count=s.shard_count,
            eviction=s.eviction,
            compression_threshold=s.compression_threshold,
        )

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    # -- the lock: one storage per file --------------------------------------------------

    def _lock(self) -> int | None:
        if sys.platform == "win32":  # pragma: no cover - no flock: nothing stops a second node
            return None
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"storage 'snapshot': cannot open {str(lock_path)!r}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(
                f"storage 'snapshot': {str(self.path)!r} is in use by another node (the same "
                "local_node_id twice, in this process or another); give each node its own id"
            ) from None
        return fd

    def _unlock(self) -> None:
        fd = getattr(self, "_lock_fd", None)  # None too when __init__ failed before the lock
        self._lock_fd = None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock

    def __del__(self) -> None:
        self._unlock()  # a storage dropped without close() (its node never started)

    # -- reading -------------------------------------------------------------------------

    def _load(self) -> int:
        """Apply the records of the snapshot, if there is one that may be used."""
        try:
            reader = SnapshotReader(self.path, self._max_record)
        except FileNotFoundError:
            return 0
        except SnapshotError as exc:
            self._set_aside(exc)
            return 0
        except OSError as exc:
            raise ConfigError(
                f"storage 'snapshot': cannot read {str(self.path)!r}: {exc.strerror}"
            ) from None
        now = self._now_ms()
        with reader:
            header = reader.header
            unusable = self._unusable(header, now)
            if unusable:
                log.warning(
                    "snapshot %s not used: %s; the node starts empty",
                    self.path,
                    unusable,
                    extra={"node_id": self.node_id},
                )
                return 0
            try:
                loaded, refused = self._apply_all(reader.records(), now)
            except SnapshotError as exc:
                for partition in self.held_partitions():
                    self.drop_partition(partition)
                self._set_aside(exc)
                return 0
        self._loaded_as_of = header.as_of_ms
        if refused:
            log.warning(
                "snapshot %s: %d values did not fit under storage.max_memory_mb",
                self.path,
                refused,
                extra={"node_id": self.node_id},
            )
        log.info(
            "snapshot %s loaded: %d records",
            self.path,
            loaded,
            extra={"node_id": self.node_id},
        )
        return loaded

    def _unusable(self, header: Header, now: int) -> str:
        """Why a snapshot must not be used; empty when it may."""
        if header.partition_count != self._partition_count:
            return (
                f"written with partition_count {header.partition_count}, this node has "
                f"{self._partition_count}"
            )
        if self.node_id and header.node_id != self.node_id:
            return f"written by node {header.node_id!r}"
        age = now - header.as_of_ms
        if self._max_age_ms <= 0 or age > self._max_age_ms:
            return (
                f"it is {age / 1000:.0f}s old and deletes made meanwhile may be forgotten by "
                f"now (it may be at most tombstone_ttl - handoff_timeout = "
                f"{self._max_age_ms / 1000:.0f}s old)"
            )
        return ""

    def _apply_all(self, records: Iterator[tuple[int, Entry]], now: int) -> tuple[int, int]:
        loaded = refused = 0
        for partition, entry in records:
            if entry.value is not None and entry.expired(now):
                continue  # gone while the node was down
            try:
                self.apply(partition, entry)
            except MemoryLimitExceeded:
                refused += 1  # a lower limit than when it was written: what fits
                continue
            loaded += 1
        return loaded, refused

    def _set_aside(self, exc: SnapshotError) -> None:
        """Keep a damaged snapshot as ``<name>.corrupt`` for inspection; start empty."""
        aside = self.path.with_name(self.path.name + ".corrupt")
        with contextlib.suppress(OSError):
            os.replace(self.path, aside)
        log.warning(
            "%s; set aside as %s, the node starts empty",
            exc,
            aside.name,
            extra={"node_id": self.node_id},
        )

    # -- writing -------------------------------------------------------------------------

    def node_started(self) -> None:
        """The node this storage belongs to has started (the plugin's hook calls it)."""
        self._started_ms = self._now_ms()

    def as_of(self) -> int:
        """The as-of time (ms) a snapshot written now carries."""
        now = self._now_ms()
        loaded = self._loaded_as_of
        if loaded is None:
            return now
        started = self._started_ms
        if started is not None and now - started >= self._settle_ms:
            self._loaded_as_of = None  # the node has caught up with the cluster
            return now
        return loaded

    def _records(self) -> Iterator[tuple[int, Entry]]:
        for partition in self.held_partitions():
            for entry in self.entries(partition):
                yield partition, entry

    def snapshot(self) -> int:
        """Write every record (values and tombstones) to the file now; return how many.

        :raises SnapshotError: the file could not be written (the previous one stays).
        """
        header = Header(self.node_id, self._partition_count, self.as_of(), self._now_ms())
        try:
            return write_snapshot(self.path, header, self._records())
        except OSError as exc:
            raise SnapshotError(
                f"cannot write snapshot {str(self.path)!r}: {exc.strerror or exc}"
            ) from None

    def final_snapshot(self) -> None:
        """The snapshot of a node beginning to close; :meth:`close` then writes none.

        Taken before the node hands its partitions over, so a node that leaves a cluster
        gracefully comes back with what it held. A failure is logged: the close goes on.
        """
        self._final = True
        self._write_logged()

    def _write_logged(self) -> None:
        started = time.monotonic()
        try:
            count = self.snapshot()
        except SnapshotError as exc:
            log.error("%s; the next start is a cold one", exc, extra={"node_id": self.node_id})
            return
        log.info(
            "snapshot %s written: %d records in %.2fs",
            self.path,
            count,
            time.monotonic() - started,
            extra={"node_id": self.node_id},
        )

    def close(self) -> None:
        """Write the snapshot (unless :meth:`final_snapshot` did), then drop every record."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._final:
                self._write_logged()
            super().close()
        finally:
            self._unlock()
