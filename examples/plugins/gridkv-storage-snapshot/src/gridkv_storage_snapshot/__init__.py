"""GridKV storage plugin "snapshot": the built-in memory backend, kept across restarts.

``storage.backend = "snapshot"`` selects it; the node's file is
``$GRIDKV_SNAPSHOT_DIR/node-<local_node_id>.snapshot``. See :mod:`gridkv_storage_snapshot.storage`
for when a snapshot is written and when it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import gridkv

from gridkv_storage_snapshot.fileformat import Header, SnapshotError, SnapshotReader
from gridkv_storage_snapshot.storage import DIR_ENV, SnapshotStorage, snapshot_path

if TYPE_CHECKING:
    from gridkv import MemberInfo
    from gridkv.plugins.hookspecs import NodeHandle
    from gridkv.storage import StorageFactory

__all__ = [
    "DIR_ENV",
    "Header",
    "SnapshotError",
    "SnapshotReader",
    "SnapshotStorage",
    "snapshot_path",
    "gridkv_register_storage",
    "gridkv_node_started",
    "gridkv_node_stopping",
    "gridkv_member_changed",
]


def _storage_of(node: NodeHandle) -> SnapshotStorage | None:
    """The node's storage when it is this plugin's (``Node.storage``)."""
    storage = getattr(node, "storage", None)
    return storage if isinstance(storage, SnapshotStorage) else None


@gridkv.hookimpl
def gridkv_register_storage(register: Callable[[str, StorageFactory], None]) -> None:
    """The "snapshot" storage backend (``storage.backend = "snapshot"``)."""

    def factory(options: gridkv.Options, *, clock: Callable[[], float]) -> SnapshotStorage:
        return SnapshotStorage.from_options(options, clock=clock)

    register("snapshot", factory)


@gridkv.hookimpl
def gridkv_node_started(node: NodeHandle) -> None:
    """Note that a node on this backend started (its loaded records may settle from now on)."""
    storage = _storage_of(node)
    if storage is not None:
        storage.node_started()


@gridkv.hookimpl
def gridkv_member_changed(node: NodeHandle, member: MemberInfo, old: str | None, new: str) -> None:
    """Follow the live peers in a node's view: its loaded records settle only among peers."""
    storage = _storage_of(node)
    if storage is not None and member.node_id != node.node_id:
        storage.member_changed(member.node_id, new)


@gridkv.hookimpl
def gridkv_node_stopping(node: NodeHandle) -> None:
    """Write the snapshot of a node that begins to close, before it hands partitions over."""
    storage = _storage_of(node)
    if storage is not None:
        storage.final_snapshot()
