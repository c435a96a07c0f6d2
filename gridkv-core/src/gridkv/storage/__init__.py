"""Local storage: the Storage interface, the digest every backend shares, the memory backend."""

from __future__ import annotations

from gridkv.storage.base import (
    Entry,
    Storage,
    StorageFactory,
    StorageStats,
    TombstoneHorizon,
    collectable,
    merge,
    tombstone_limits,
)
from gridkv.storage.digest import (
    Digests,
    PartitionDigests,
    VersionRecord,
    digests_of,
    fingerprint,
    key_hash,
)
from gridkv.storage.memory import MemoryStorage

__all__ = [
    "Entry",
    "Storage",
    "StorageFactory",
    "StorageStats",
    "TombstoneHorizon",
    "collectable",
    "merge",
    "tombstone_limits",
    "Digests",
    "PartitionDigests",
    "VersionRecord",
    "digests_of",
    "fingerprint",
    "key_hash",
    "MemoryStorage",
]
