"""The storage interface every backend implements, and the entry type it exchanges."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gridkv.hlc import version_wins

if TYPE_CHECKING:
    from gridkv.options import Options

__all__ = ["Entry", "Storage", "StorageFactory", "StorageStats", "merge"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored version of a key: a value or a tombstone.

    :ivar key: the key.
    :ivar value: the value, or ``None`` for a tombstone (a delete).
    :ivar version: the HLC timestamp of the write.
    :ivar writer: the node id that made the write; breaks ties between equal timestamps.
    :ivar expires_at: absolute expiry in milliseconds since the epoch, 0 for never. For a
        tombstone, the time after which it may be collected.
    """

    key: str
    value: bytes | None
    version: int
    writer: str
    expires_at: int = 0

    @property
    def tombstone(self) -> bool:
        """Whether this entry records a delete."""
        return self.value is None

    def wins_over(self, other: Entry) -> bool:
        """Whether this version beats ``other`` (greater ``(version, writer)``)."""
        return version_wins(self.version, self.writer, other.version, other.writer)

    def expired(self, now_ms: int) -> bool:
        """Whether the entry has passed its expiry time at ``now_ms``."""
        return self.expires_at != 0 and self.expires_at <= now_ms


def merge(a: Entry | None, b: Entry | None) -> Entry | None:
    """Last-writer-wins merge: the entry with the greater ``(version, writer)``.

    Commutative, associative and idempotent, so replicas that see the same set of writes in
    any order and any number of times end in the same state.
    """
    if a is None:
        return b
    if b is None:
        return a
    return b if b.wins_over(a) else a


@dataclass(frozen=True, slots=True)
class StorageStats:
    """Figures about a storage backend.

    :ivar backend: the backend's plugin name.
    :ivar keys: live entries (values not yet expired or swept).
    :ivar tombstones: delete markers kept until ``tombstone_ttl`` has passed.
    :ivar used_bytes: memory charged for the entries (see ``docs/architecture.md``).
    :ivar max_bytes: the limit, 0 for none.
    :ivar evictions: entries evicted to stay under the limit.
    :ivar expirations: entries removed because their TTL passed.
    :ivar compressed: entries stored lz4-compressed.
    :ivar shards: number of shards.
    """

    backend: str
    keys: int
    tombstones: int
    used_bytes: int
    max_bytes: int
    evictions: int
    expirations: int
    compressed: int
    shards: int


@runtime_checkable
class Storage(Protocol):
    """A node's local store, organised by partition.

    Every write goes through :meth:`apply`, which keeps the entry only when it wins the
    last-writer-wins comparison against what is stored, so local writes, replication, read
    repair, anti-entropy and handoff all follow one rule. Implementations are thread-safe.
    """

    name: str

    def get(self, partition: int, key: str) -> bytes | None:
        """The live value of ``key``, or ``None`` when missing, expired or deleted."""

    def get_entry(self, partition: int, key: str) -> Entry | None:
        """The stored entry (tombstones included, expired values not), or ``None``."""

    def apply(self, partition: int, entry: Entry) -> bool:
        """Store ``entry`` if it wins over the stored version; return whether it did.

        :raises MemoryLimitExceeded: storing it would pass the memory limit and nothing can
            be evicted.
        """

    def entries(self, partition: int) -> Iterator[Entry]:
        """The entries of a partition (a snapshot; tombstones included)."""

    def drop_partition(self, partition: int) -> int:
        """Forget a partition this node no longer holds; return the entries dropped."""

    def digest(self, partition: int) -> int:
        """A summary of the partition's records; equal on two replicas with equal records."""

    def sweep(self, now_ms: int, budget: int) -> int:
        """Remove up to ``budget`` expired values and collectable tombstones; return how many."""

    def stats(self) -> StorageStats:
        """Current figures."""

    def close(self) -> None:
        """Release everything; the storage is not used afterwards."""


class StorageFactory(Protocol):
    """Builds a storage backend for a node; registered through ``gridkv_register_storage``."""

    def __call__(self, options: Options) -> Storage:
        """Return a new backend configured from ``options``."""
