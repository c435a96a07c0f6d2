"""The snapshot backend passes the storage conformance suite, built from its installed entry
point as a node builds it (each backend in a directory of its own, so each starts empty)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count
from pathlib import Path

import pytest
from gridkv.plugins import Plugins
from gridkv.storage import Storage
from gridkv.testing import (
    LimitedStorageMaker,
    StorageConformance,
    StorageMaker,
    conformance_options,
)
from gridkv_storage_snapshot import DIR_ENV, SnapshotStorage


class TestSnapshotStorage(StorageConformance):
    """Eviction "none" (the default), as a node gets it from the installed entry point."""

    @pytest.fixture
    def make_storage(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StorageMaker:
        factory = Plugins().storage("snapshot")
        made = count()

        def make(clock: Callable[[], float]) -> Storage:
            monkeypatch.setenv(DIR_ENV, str(tmp_path / f"s{next(made)}"))
            storage = factory(conformance_options(), clock=clock)
            assert isinstance(storage, SnapshotStorage)
            return storage

        return make

    @pytest.fixture
    def make_limited_storage(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> LimitedStorageMaker:
        factory = Plugins().storage("snapshot")
        made = count()

        def make(clock: Callable[[], float], max_bytes: int) -> Storage:
            monkeypatch.setenv(DIR_ENV, str(tmp_path / f"l{next(made)}"))
            return factory(conformance_options(max_bytes), clock=clock)

        return make


class TestSnapshotStorageLru(TestSnapshotStorage):
    """Eviction "lru", partitions sharing shards unevenly, small values compressed."""

    @pytest.fixture
    def make_storage(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StorageMaker:
        factory = Plugins().storage("snapshot")
        options = conformance_options(eviction="lru", shard_count=3, compression_threshold=64)
        made = count()

        def make(clock: Callable[[], float]) -> Storage:
            monkeypatch.setenv(DIR_ENV, str(tmp_path / f"s{next(made)}"))
            return factory(options, clock=clock)

        return make

    @pytest.fixture
    def make_limited_storage(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> LimitedStorageMaker:
        factory = Plugins().storage("snapshot")
        made = count()

        def make(clock: Callable[[], float], max_bytes: int) -> Storage:
            monkeypatch.setenv(DIR_ENV, str(tmp_path / f"l{next(made)}"))
            return factory(
                conformance_options(max_bytes, eviction="lru", shard_count=3), clock=clock
            )

        return make
