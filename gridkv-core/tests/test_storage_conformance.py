"""The memory backend passes the storage conformance suite, built the way a node builds it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gridkv.plugins import Plugins
from gridkv.storage import Storage
from gridkv.testing import (
    LimitedStorageMaker,
    StorageConformance,
    StorageMaker,
    conformance_options,
)


def _memory_factory() -> Callable[..., Storage]:
    return Plugins(load_entry_points=False).storage("memory")


class TestMemoryStorage(StorageConformance):
    """Eviction "none", one shard per partition."""

    @pytest.fixture
    def make_storage(self) -> StorageMaker:
        factory = _memory_factory()
        return lambda clock: factory(conformance_options(), clock=clock)

    @pytest.fixture
    def make_limited_storage(self) -> LimitedStorageMaker:
        factory = _memory_factory()
        return lambda clock, max_bytes: factory(conformance_options(max_bytes), clock=clock)


class TestMemoryStorageLru(StorageConformance):
    """Eviction "lru", partitions sharing shards unevenly (16 partitions, 3 shards)."""

    @pytest.fixture
    def make_storage(self) -> StorageMaker:
        factory = _memory_factory()
        options = conformance_options(eviction="lru", shard_count=3, compression_threshold=64)
        return lambda clock: factory(options, clock=clock)

    @pytest.fixture
    def make_limited_storage(self) -> LimitedStorageMaker:
        factory = _memory_factory()
        return lambda clock, max_bytes: factory(
            conformance_options(max_bytes, eviction="lru", shard_count=3), clock=clock
        )
