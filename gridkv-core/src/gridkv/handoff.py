"""Handoff: when membership changes, partitions move to their new replicas.

After every change of the view (coalesced over one ``gossip_interval``), a node
compares the partition table it last handed off under with the current one. For each
partition it held that has gained replicas:

* if this node is no longer a replica, it sends its entries to every new replica, in batches it
  waits to be acknowledged, and drops the partition only once all of them acknowledged;
* if no former replica that left the partition is alive, the first former replica still in
  the view sends its entries instead, and keeps them.

The giver then tells each new replica that the partition is complete
(:class:`~gridkv.wire.messages.HandoffDone`). Until then, or until ``HANDOFF_WAIT`` passes, a
new replica answers a ``one`` read that misses locally by asking the former replicas, so
keys that exist are never reported missing during the move. Anti-entropy repairs anything a
failed handoff leaves behind.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gridkv.errors import GridKVError
from gridkv.log import LOGGER_NAME
from gridkv.ring import PartitionTable
from gridkv.storage.base import Entry
from gridkv.wire.messages import BatchAck, HandoffDone, ReplicateBatch

if TYPE_CHECKING:
    from gridkv.node import Node

__all__ = ["Handoff", "HANDOFF_WAIT", "CHUNK"]

log = logging.getLogger(LOGGER_NAME)

#: Seconds a new replica keeps asking former replicas without hearing that a move is done.
HANDOFF_WAIT = 30.0
#: Entries per batch of a handoff.
CHUNK = 1000


class Handoff:
    """Moves partitions between nodes as the view changes."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._table: PartitionTable | None = None
        self._scheduled = False
        self._running: asyncio.Task[None] | None = None
        #: partition -> (former replicas, give up waiting at): moves into this node.
        self.receiving: dict[int, tuple[tuple[str, ...], float]] = {}
        #: Counters: partitions given, entries sent, partitions dropped.
        self.partitions_given = 0
        self.entries_sent = 0
        self.partitions_dropped = 0

    def start(self) -> None:
        """Take the starting table as the one handed off under.

        A node that joins through seeds holds nothing yet: its first rebalance compares the
        view without itself with the view with it, so it knows whom its partitions come from.
        """
        self._table = None if self.node.options.seed_addrs else self.node.ensure_table()

    def table_changed(self, old: PartitionTable, new: PartitionTable) -> None:
        """Mark the partitions moving to this node at once (any thread; rebuilds call it).

        Until the giver says it is done, reads here that miss ask the former replicas.
        """
        node = self.node
        me = node.node_id
        if self._table is None:
            others = [n for n in node.membership.live_ids() if n != me]
            if not others:
                return
            opts = node.options
            old = PartitionTable.build(
                others, opts.partition_count, opts.replica_count, opts.virtual_nodes
            )
        loop = node.loop
        until = (loop.time() if loop is not None else 0.0) + HANDOFF_WAIT
        for partition, (before, after) in enumerate(zip(old.replicas, new.replicas, strict=True)):
            if before and me in after and me not in before:
                self.receiving[partition] = (before, until)

    def view_changed(self) -> None:
        """Schedule a rebalance soon (called on the loop for every membership change)."""
        loop = self.node.loop
        if self._scheduled or loop is None or not self.node.running:
            return
        self._scheduled = True
        loop.call_later(self.node.options.gossip_interval, self._kick)

    def _kick(self) -> None:
        self._scheduled = False
        if not self.node.running:
            return
        if self._running is not None and not self._running.done():
            self.view_changed()  # one rebalance at a time; look again afterwards
            return
        assert self.node.loop is not None
        self._running = self.node.loop.create_task(self.rebalance(), name="gridkv handoff")

    async def stop(self) -> None:
        """Cancel a rebalance under way (the node is closing)."""
        task = self._running
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def leave(self) -> None:
        """Before a graceful leave: give every partition held here to its next replicas.

        The table without this node says who takes over; they get everything this node holds
        of the partitions they gain, so nothing is lost even with ``replica_count = 1``.
        """
        node = self.node
        me = node.node_id
        others = [n for n in node.membership.live_ids() if n != me]
        if not others:
            return
        opts = node.options
        current = node.ensure_table()
        after = PartitionTable.build(
            others, opts.partition_count, opts.replica_count, opts.virtual_nodes
        )
        by_peer: dict[str, list[int]] = {}
        for partition, (before, later) in enumerate(
            zip(current.replicas, after.replicas, strict=True)
        ):
            if me in before:
                for replica in later:
                    if replica not in before:
                        by_peer.setdefault(replica, []).append(partition)
        for replica, parts in by_peer.items():
            await self._give(replica, parts)

    def waiting_on(self, partition: int) -> tuple[str, ...]:
        """Former replicas to ask when a read of ``partition`` misses here (may be empty)."""
        item = self.receiving.get(partition)
        if item is None:
            return ()
        owners, until = item
        loop = self.node.loop
        if loop is not None and loop.time() > until:
            del self.receiving[partition]
            return ()
        return owners

    async def rebalance(self) -> None:
        """Compare the last table with the current one and move what has to move."""
        node = self.node
        old = self._table
        new = node.ensure_table()
        me = node.node_id
        live = set(node.membership.live_ids())
        if old is None:
            others = sorted(live - {me})
            if not others:
                return  # alone so far: wait for the join
            opts = node.options
            old = PartitionTable.build(
                others, opts.partition_count, opts.replica_count, opts.virtual_nodes
            )
        if old == new:
            self._table = new
            return
        self._table = new
        gives: list[tuple[int, list[str], bool]] = []
        for partition, (before, after) in enumerate(zip(old.replicas, new.replicas, strict=True)):
            newcomers = [r for r in after if r not in before]
            if not newcomers or me not in before:
                continue
            displaced = me not in after
            leavers_alive = [r for r in before if r not in after and r in live]
            first_kept = next((r for r in before if r in after and r in live), None)
            if displaced or (not leavers_alive and first_kept == me):
                gives.append((partition, newcomers, displaced))
        node._update_local_reads()
        by_peer: dict[str, list[int]] = {}
        for partition, newcomers, _ in gives:
            for replica in newcomers:
                by_peer.setdefault(replica, []).append(partition)
        failed: set[int] = set()
        for replica, parts in by_peer.items():
            if not await self._give(replica, parts):
                failed.update(parts)
        for partition, _, displaced in gives:
            # Dropped only once every new replica acknowledged, and if still not ours.
            if (
                displaced
                and partition not in failed
                and me not in node.ensure_table().owners(partition)
            ):
                node.storage.drop_partition(partition)
                self.partitions_dropped += 1
        self.partitions_given += len({p for p, _, _ in gives} - failed)

    async def _give(self, replica: str, parts: list[int]) -> bool:
        """Send ``replica`` everything held of ``parts``, then say so; return whether it acked."""
        node = self.node
        address = node.membership.address_of(replica)
        if address is None:
            return False
        entries = [(p, e) for p in parts for e in node.storage.entries(p)]
        try:
            for start in range(0, len(entries), CHUNK):
                chunk: list[tuple[int, Entry]] = entries[start : start + CHUNK]
                reply = await node.request(address, ReplicateBatch(node.node_id, chunk))
                if not isinstance(reply, BatchAck):
                    raise GridKVError(f"{replica!r} answered {type(reply).__name__}")
                self.entries_sent += len(chunk)
            await node.request(address, HandoffDone(node.node_id, parts))
        except GridKVError as exc:
            if node.running:
                log.warning(
                    "handoff failed; anti-entropy will repair",
                    extra={"peer": replica, "partitions": len(parts), "error": str(exc)},
                )
            return False
        return True

    def on_done(self, message: HandoffDone) -> BatchAck:
        """A giver finished sending partitions here: stop asking former replicas for them."""
        for partition in message.partitions:
            self.receiving.pop(partition, None)
        self.node._update_local_reads()
        return BatchAck(len(message.partitions))
