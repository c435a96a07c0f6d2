"""Where a key goes: its 64-bit hash and its partition, one definition for every layer.

The ring, the storage backends (buckets within a partition), the coordinator and the API all
hash a key the same way: xxh3-64 of its UTF-8 bytes, the same on every node and in every
process. A key's partition is that hash modulo ``partition_count``.
"""

from __future__ import annotations

from collections.abc import Callable

import xxhash

__all__ = ["hash_key_bytes", "key_hash", "partition_of"]

#: The 64-bit hash of a key's UTF-8 bytes. The API's fast path, which has the bytes already
#: (it measures them against ``max_key_bytes``), computes ``hash_key_bytes(raw) % count``
#: inline: the same arithmetic as :func:`partition_of`, without a call.
hash_key_bytes: Callable[[bytes], int] = xxhash.xxh3_64_intdigest


def key_hash(key: str) -> int:
    """The stable 64-bit hash of a key (xxh3 of its UTF-8 bytes)."""
    return hash_key_bytes(key.encode())


def partition_of(key: str, partition_count: int) -> int:
    """The partition ``key`` belongs to, of ``partition_count``."""
    return hash_key_bytes(key.encode()) % partition_count
