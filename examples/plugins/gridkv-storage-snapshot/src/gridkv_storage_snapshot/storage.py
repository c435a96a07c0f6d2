"""``SnapshotStorage``: the built-in memory backend, written to a file and read back on start.

Everything a node stores is kept by :class:`~gridkv.storage.MemoryStorage` (records, memory
accounting, eviction, tombstones, digests, the sweep), unchanged; this subclass only adds the
file. A node writes its snapshot when it begins to close (before it hands its partitions to
other nodes: the plugin's ``gridkv_node_stopping`` hook), or when its storage closes if that
hook did not run, and reads it when it is built again under the same ``local_node_id``.
Writes are serialised (one at a time, each to a temporary file of its own, renamed over the
snapshot); once the final snapshot is written, later calls write nothing.

Deletes stay deleted. A snapshot holds old values; a value whose key the cluster deleted
while this node was down must not come back from it. The cluster keeps a delete's tombstone
for at least ``tombstone_ttl``, so a snapshot is used only while its *as-of* time (the moment
its records were known to hold every delete) is younger than ``tombstone_ttl`` minus
``handoff_timeout`` (a margin for deletes still on their way to this node when it wrote the
file). Records loaded from a snapshot keep its as-of time until the node has *settled*: it
has started, and its view has held a live peer, without a break, for ``settle`` seconds
(``2 * handoff_timeout + 2 * anti_entropy_interval``: handoff has brought it the partitions
it now replicates, and its co-replicas have run a full anti-entropy round with it, which
brings every tombstone they hold). The clock starts when the first peer is seen alive (the
plugin's ``gridkv_member_changed`` hook), not when the node starts, and starts over whenever
the view has no live peer left: a node cut off from its cluster (seeds down, a network
partition) or alone never settles, and a snapshot it writes carries the older time, however
long it runs.

The file and its directory are trusted only when nobody else could have written them: the
directory (``GRIDKV_SNAPSHOT_DIR``) must belong to the node's user and not be writable by its
group or others, and the snapshot, opened without following a link, must be a regular file of
the node's user that its group and others cannot write; otherwise the node does not start
(:class:`~gridkv.ConfigError` naming the path). The lock file is closed in a child process
forked from the node's (it does not keep the file locked), and such a child writes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
import sys
import threading
import time
import weakref
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
    temporary_names,
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


def _euid() -> int | None:
    geteuid = getattr(os, "geteuid", None)
    return geteuid() if geteuid is not None else None  # pragma: no branch - None on Windows


def _check_directory(directory: Path, raw: str) -> None:
    """Refuse a snapshot directory someone else could put files in, or replace them in.

    :raises ConfigError: it belongs to another user than the node's, or its group or others
        may write it.
    """
    euid = _euid()
    if euid is None:  # pragma: no cover - Windows: no owners and modes to check
        return
    st = os.stat(directory)
    if st.st_uid != euid:
        raise ConfigError(
            f"storage.backend 'snapshot': {DIR_ENV}={raw!r} belongs to user {st.st_uid}, not "
            f"to the user this node runs as ({euid}): whoever owns it could put a snapshot "
            "there for the node to load; use a directory of the node's own"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"storage.backend 'snapshot': {DIR_ENV}={raw!r} has mode {mode:04o}, which lets "
            f"other users put their own snapshot there, or replace the node's: chmod go-w "
            f"{raw}"
        )


def _directory_from_env() -> Path:
    """The snapshot directory ``GRIDKV_SNAPSHOT_DIR`` names, created (mode 0700) when missing.

    :raises ConfigError: the variable is not set, or names something that is not a
        directory this process can write, or one another user owns or its group or others
        may write.
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
    _check_directory(directory, raw)
    return directory


#: The storages of this process that hold their file's lock: a forked child closes their
#: lock descriptors (a flock is shared with a child through a descriptor it inherits).
_LOCKED: weakref.WeakSet[SnapshotStorage] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for storage in list(_LOCKED):
        storage._forget_lock()
    _LOCKED.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


class SnapshotStorage(MemoryStorage):
    """The memory backend, with its records written to ``path`` and read back when built.

    :param path: the snapshot file (read now if it exists; written by :meth:`snapshot`).
    :param partition_count: number of partitions (the node's ``partition_count``); a snapshot
        of another count is not used.
    :param node_id: the node this storage belongs to (written in the file).
    :param max_age: seconds a snapshot's as-of time may lie in the past for it to be used
        (``tombstone_ttl - handoff_timeout``); 0 or less never uses one.
    :param settle: seconds the node's view must have held a live peer, without a break,
        after it started, before loaded records count as up to date
        (``2 * handoff_timeout + 2 * anti_entropy_interval``); see the module documentation.
    :param max_record_bytes: the largest record a snapshot may hold.
    :param clock: wall time in seconds (the node's clock).
    :param max_bytes: memory limit in bytes, 0 for none (as :class:`MemoryStorage`).
    :param shard_count: as :class:`MemoryStorage`.
    :param eviction: as :class:`MemoryStorage`.
    :param compression_threshold: as :class:`MemoryStorage`.
    :raises ConfigError: the snapshot cannot be read (permissions), is a symbolic link or
        not a regular file, belongs to another user or may be written by its group or
        others; or another storage in this or another process uses the same file.
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
        self._pid = os.getpid()
        #: Held while a snapshot is written: one writer at a time.
        self._write_lock = threading.Lock()
        self._lock_fd = self._lock()
        #: The as-of time of the loaded records until they count as up to date; else None.
        self._loaded_as_of: int | None = None
        self._started = False
        #: Peers alive in the node's view (its member_changed hook keeps it).
        self._alive_peers: set[str] = set()
        #: Since when (ms) the node has run with a live peer in its view, without a break.
        self._settling_since: int | None = None
        self._final = False
        self._closed = False
        #: Records read from the snapshot when this storage was built.
        self.loaded = 0
        try:
            self._remove_temporaries()
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
            settle=2 * options.handoff_timeout + 2 * options.anti_entropy_interval,
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
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(lock_path, flags, 0o600)
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
        _LOCKED.add(self)
        return fd

    def _unlock(self) -> None:
        fd = getattr(self, "_lock_fd", None)  # None too when __init__ failed before the lock
        self._lock_fd = None
        if fd is not None:
            _LOCKED.discard(self)
            os.close(fd)  # closing the descriptor releases the lock

    def _forget_lock(self) -> None:
        """In a forked child: close the inherited lock descriptor (the parent keeps the lock)."""
        fd = self._lock_fd
        self._lock_fd = None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _remove_temporaries(self) -> None:
        """Remove the temporary files of writes a crash interrupted (the lock is held)."""
        for name in temporary_names(self.path):
            with contextlib.suppress(OSError):
                os.unlink(self.path.with_name(name))

    def __del__(self) -> None:
        self._unlock()  # a storage dropped without close() (its node never started)

    # -- reading -------------------------------------------------------------------------

    def _load(self) -> int:
        """Apply the records of the snapshot, if there is one that may be used."""
        try:
            reader = SnapshotReader(self.path, self._max_record, check=self._check_file)
        except FileNotFoundError:
            return 0
        except SnapshotError as exc:
            self._set_aside(exc)
            return 0
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(
                    f"storage 'snapshot': {str(self.path)!r} is a symbolic link; a snapshot is "
                    "a plain file the node writes itself, and a link is not followed"
                ) from None
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

    def _check_file(self, st: os.stat_result) -> None:
        """Refuse a snapshot someone else could have written (before a byte of it is read).

        :raises ConfigError: not a regular file, another user's, or writable by its group or
            others.
        """
        shown = str(self.path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"storage 'snapshot': {shown!r} is not a regular file")
        euid = _euid()
        if euid is None:  # pragma: no cover - Windows: no owners and modes to check
            return
        if st.st_uid != euid:
            raise ConfigError(
                f"storage 'snapshot': {shown!r} belongs to user {st.st_uid}, not to the user "
                f"this node runs as ({euid}); the node writes its snapshot itself and loads no "
                "other: remove it"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigError(
                f"storage 'snapshot': {shown!r} has mode {mode:04o}: others could have "
                f"changed what it holds; the node writes it 0600: remove it"
            )

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
        self._started = True
        self._view_changed()

    def member_changed(self, node_id: str, state: str) -> None:
        """A member's state changed in the node's view (the plugin's hook calls it).

        :param node_id: the member (this node's own changes are ignored).
        :param state: its new state; only ``"alive"`` counts as a live peer.
        """
        if node_id == self.node_id:
            return
        if state == "alive":
            self._alive_peers.add(node_id)
        else:
            self._alive_peers.discard(node_id)
        self._view_changed()

    def _view_changed(self) -> None:
        """Start the settle clock at the first live peer; stop it when none is left."""
        now = self._now_ms()
        self._settle(now)  # a span with a peer long enough counts, even if it just ended
        if not (self._started and self._alive_peers):
            self._settling_since = None
        elif self._settling_since is None:
            self._settling_since = now

    def _settle(self, now: int) -> None:
        since = self._settling_since
        if since is not None and now - since >= self._settle_ms:
            self._loaded_as_of = None  # the node has caught up with the cluster

    @property
    def settled(self) -> bool:
        """Whether the records held count as up to date (none loaded, or the node settled)."""
        self._settle(self._now_ms())
        return self._loaded_as_of is None

    def as_of(self) -> int:
        """The as-of time (ms) a snapshot written now carries."""
        now = self._now_ms()
        self._settle(now)
        loaded = self._loaded_as_of
        return now if loaded is None else loaded

    def _records(self) -> Iterator[tuple[int, Entry]]:
        for partition in self.held_partitions():
            for entry in self.entries(partition):
                yield partition, entry

    def snapshot(self) -> int:
        """Write every record (values and tombstones) to the file now; return how many.

        Safe from any thread: writes are serialised, a second one waits for the first. Once
        the final snapshot is written (the node is closing) or the storage is closed, this
        writes nothing and returns 0: what the node holds then is being handed over.

        :raises SnapshotError: the file could not be written (the previous one stays), or
            this is a copy of the storage in a process forked from the node's.
        """
        if self._forked():
            raise SnapshotError(
                f"cannot write snapshot {str(self.path)!r} from a process forked from the "
                "node's: the file is the node's"
            )
        with self._write_lock:
            if self._final or self._closed:
                return 0
            return self._write()

    def _forked(self) -> bool:
        """Whether this is a copy of the storage in a child forked from the node's process."""
        return os.getpid() != self._pid

    def _write(self) -> int:
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
        if self._forked():
            return
        with self._write_lock:  # after a snapshot being written now, which it replaces
            if self._final or self._closed:
                return
            self._final = True
            self._write_logged()

    def _write_logged(self) -> None:
        started = time.monotonic()
        try:
            count = self._write()
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
        if self._forked():  # a copy in a forked child: drop its records, write nothing
            if not self._closed:
                self._closed = True
                super().close()
            return
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            try:
                if not self._final:
                    self._write_logged()
                super().close()
            finally:
                self._unlock()
