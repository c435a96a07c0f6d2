"""The partition table of the current view, kept up to date lazily and safe from any thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from gridkv.cluster.ring import PartitionTable

if TYPE_CHECKING:
    from gridkv.base.options import Options

__all__ = ["Partitions"]


class Partitions:
    """Partition -> replicas for the current membership view.

    A membership change marks the table stale (:meth:`mark_stale`); the next caller that needs
    it rebuilds it once (:meth:`ensure_table`), from any thread. Routing a key is then a hash
    and a list lookup.

    :param node_id: this node's id.
    :param options: partition count, replica count and virtual nodes.
    :param live_ids: the members alive or suspected now, this node included.
    :param table_changed: called with the old and the new table on each rebuild, under the
        lock (handoff marks the partitions moving in).
    :param rebuilt: called after each rebuild, outside the lock.
    """

    def __init__(
        self,
        node_id: str,
        options: Options,
        live_ids: Callable[[], list[str]],
        table_changed: Callable[[PartitionTable, PartitionTable], None],
        rebuilt: Callable[[], None],
    ) -> None:
        self._node_id = node_id
        self._options = options
        self._live_ids = live_ids
        self._table_changed = table_changed
        self._rebuilt = rebuilt
        #: Held while the table is swapped; readers of :attr:`stale` and :attr:`owned` that
        #: need the two to agree take it too.
        self.lock = threading.Lock()
        #: True from a membership change until the next rebuild.
        self.stale = False
        #: The table of the last rebuild.
        self.table = PartitionTable.build(
            [node_id], options.partition_count, options.replica_count, options.virtual_nodes
        )
        #: ``owned[p]`` is 1 when this node is a replica of partition ``p``.
        self.owned = self.table.owned_mask(node_id)

    def mark_stale(self) -> None:
        """The view changed: rebuild the table the next time it is needed."""
        with self.lock:
            self.stale = True

    def ensure_table(self) -> PartitionTable:
        """The table for the current view, rebuilt first if the view changed."""
        if not self.stale:
            return self.table
        with self.lock:
            if self.stale:
                self.stale = False
                opts = self._options
                table = PartitionTable.build(
                    self._live_ids(), opts.partition_count, opts.replica_count, opts.virtual_nodes
                )
                self._table_changed(self.table, table)
                self.table = table
                self.owned = table.owned_mask(self._node_id)
        self._rebuilt()
        return self.table

    def holds(self, partition: int) -> bool:
        """Whether this node is one of ``partition``'s replicas in the current view."""
        self.ensure_table()
        return bool(self.owned[partition])
