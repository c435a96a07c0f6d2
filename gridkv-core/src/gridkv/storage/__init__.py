"""Local storage: the :class:`Storage` interface and the built-in sharded memory backend."""

from __future__ import annotations

from gridkv.storage.base import Entry, Storage, StorageFactory, StorageStats, merge
from gridkv.storage.memory import MemoryStorage

__all__ = ["Entry", "Storage", "StorageFactory", "StorageStats", "merge", "MemoryStorage"]
