"""Handoff: when membership changes, partitions move to their new replicas.

After every change of the view (coalesced over one ``gossip_interval``), a node compares the
partition table it last handed off under with the current one. For each partition it held
that has gained replicas:

* if this node is no longer a replica, it gives its entries to every new replica and then
  drops exactly the versions they all acknowledged as stored (a write that arrived meanwhile
  stays, and is given in the next pass);
* if no former replica that left the partition is alive, the first former replica still in
  the view gives its entries instead, and keeps them.

Besides, any partition this node holds but does not replicate (a handoff that failed, data
left from an older view, entries a member that left handed here although this view does not
make this node their replica) is given to its current replicas and dropped the same way. A give
that fails (a new replica unreachable, or not yet seeing itself as a replica) is tried again
until it succeeds or ``handoff_timeout`` has passed since it began; then a partition this node
no longer replicates is dropped with whatever could not be given. That bound is what lets
tombstones be collected safely: see :mod:`gridkv.cluster.replication.tombstones`.

A node that leaves stops hearing about the others (it sends no membership traffic, and nobody
gossips to a member that left), so its view can be stale: members it believes alive may be
leaving or gone, and members may have joined that it never hears of. So a leaving node refuses
every handoff at once (:class:`~gridkv.node.router.Router`); a leaving giver stops giving to a
member that refused or could not be reached, and gives its partitions to the replicas of a
table without it; and a member that stays takes what a member that left hands it even when its
own view does not make it a replica, and passes it on as above. Every partition of a leaving
node thus ends up on a node that stays, as long as one it knows of stays.

Entries travel in replication batches cut to the message budget; the giver then tells each
new replica that the partition is complete (:class:`~gridkv.wire.messages.HandoffDone`). Until
then, or until ``handoff_timeout`` passes, a new replica answers a ``one`` read that misses
locally by asking the former replicas, so keys that exist are never reported missing during
the move. Anti-entropy repairs anything a handoff leaves behind between replicas.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gridkv.base.errors import GridKVError
from gridkv.base.log import LOGGER_NAME
from gridkv.cluster.handoff.plan import plan_gives
from gridkv.cluster.ring import PartitionTable
from gridkv.storage.base import Entry
from gridkv.wire.budget import MAX_ITEMS_PER_MESSAGE, entry_size, message_budget
from gridkv.wire.messages import HELD, STORED, BatchAck, DigestReply, DigestSync, HandoffDone

if TYPE_CHECKING:
    from gridkv.cluster.context import ClusterContext, Replica

__all__ = ["Handoff"]

log = logging.getLogger(LOGGER_NAME)

#: Member states that count in the partition table.
_LIVE = ("alive", "suspect")
#: Versions of the entries a replica acknowledged: ``(key, version, writer)``.
_Acked = set[tuple[str, int, str]]


@dataclass(slots=True)
class _Give:
    """A partition on its way from this node to other nodes."""

    #: Nodes to give it to that have not yet acknowledged all of it.
    targets: set[str]
    #: This node no longer replicates the partition: drop what was given.
    drop: bool
    #: Loop time the give began, or the view last changed; it is abandoned
    #: ``handoff_timeout`` later.
    started: float
    #: Targets that acknowledged everything in the current pass, and the versions acked.
    acked: dict[str, _Acked] = field(default_factory=dict)


class Handoff:
    """Moves partitions between nodes as the view changes."""

    def __init__(
        self, ctx: ClusterContext, replica: Replica, refresh_local_reads: Callable[[], None]
    ) -> None:
        self.ctx = ctx
        self._replica = replica
        self._refresh_local_reads = refresh_local_reads
        self._timeout = ctx.options.handoff_timeout
        self._budget = message_budget(ctx.options.network.max_frame_bytes)
        self._table: PartitionTable | None = None
        self._scheduled = False
        self._running: asyncio.Task[None] | None = None
        self._gives: dict[int, _Give] = {}
        #: During a graceful leave: members a give failed on (leaving, gone, unreachable).
        #: The leave hands partitions to the replicas of a table without them.
        self._avoid: set[str] | None = None
        # partition -> (former replicas, give up waiting at): moves into this ctx. Changed
        # from callers' threads (a table rebuild) and the loop, so only under the lock.
        self._receiving: dict[int, tuple[tuple[str, ...], float]] = {}
        self._lock = threading.Lock()
        #: Counters: partitions given, entries sent, entries dropped after a give,
        #: partitions abandoned after handoff_timeout (and the values dropped then).
        self.partitions_given = 0
        self.entries_sent = 0
        self.entries_dropped = 0
        self.partitions_abandoned = 0
        self.entries_abandoned = 0

    @property
    def receiving(self) -> dict[int, tuple[tuple[str, ...], float]]:
        """Partitions still moving into this node: ``{partition: (former replicas, until)}``.

        A copy, safe to read from any thread.
        """
        with self._lock:
            return dict(self._receiving)

    @property
    def pending(self) -> int:
        """Partitions this node is still giving away, or holds without replicating them."""
        return len(set(self._gives).union(self._leftovers()))

    def _leftovers(self) -> list[int]:
        """Partitions held here that this node does not replicate (given in the next pass)."""
        ctx = self.ctx
        table = ctx.partitions.ensure_table()
        return [p for p in ctx.storage.held_partitions() if ctx.node_id not in table.owners(p)]

    def _targets(self) -> list[str]:
        """The members this node may give to: live, not itself, not avoided during a leave."""
        avoid = self._avoid or ()
        me = self.ctx.node_id
        return [n for n in self.ctx.membership.live_ids() if n != me and n not in avoid]

    def _current(self) -> PartitionTable:
        """The table to give by: the view's, without the members a leave gave up on."""
        table = self.ctx.partitions.ensure_table()
        if not self._avoid:
            return table
        targets = self._targets()
        if not targets:
            return table
        opts = self.ctx.options
        return PartitionTable.build(
            targets, opts.partition_count, opts.replica_count, opts.virtual_nodes
        )

    def start(self) -> None:
        """Take the starting table as the one handed off under.

        A node that joins through seeds holds nothing yet: its first rebalance compares the
        view without itself with the view with it, so it knows whom its partitions come from.
        """
        self._table = None if self.ctx.options.seed_addrs else self.ctx.partitions.ensure_table()

    def _without_me(self) -> PartitionTable | None:
        ctx = self.ctx
        others = [n for n in ctx.membership.live_ids() if n != ctx.node_id]
        if not others:
            return None
        opts = ctx.options
        return PartitionTable.build(
            others, opts.partition_count, opts.replica_count, opts.virtual_nodes
        )

    def table_changed(self, old: PartitionTable, new: PartitionTable) -> None:
        """Mark the partitions moving to this node at once (any thread; rebuilds call it).

        Until the giver says it is done, reads here that miss ask the former replicas.
        """
        me = self.ctx.node_id
        if self._table is None:
            before = self._without_me()
            if before is None:
                return
            old = before
        until = self.ctx.loop_time() + self._timeout
        with self._lock:
            for partition, (was, now) in enumerate(zip(old.replicas, new.replicas, strict=True)):
                if was and me in now and me not in was:
                    self._receiving[partition] = (was, until)

    def waiting_on(self, partition: int) -> tuple[str, ...]:
        """Former replicas to ask when a read of ``partition`` misses here (may be empty)."""
        with self._lock:
            item = self._receiving.get(partition)
            if item is None:
                return ()
            owners, until = item
            if self.ctx.loop_time() > until:
                del self._receiving[partition]
                return ()
            return owners

    def on_done(self, message: HandoffDone) -> BatchAck:
        """A giver finished sending partitions here: stop asking former replicas for them.

        Partitions this view does not make this node replicate (a member that left handed
        them over by its own, older view) are passed on to their replicas in a pass soon.
        """
        with self._lock:
            for partition in message.partitions:
                self._receiving.pop(partition, None)
        self._refresh_local_reads()
        holds = self.ctx.partitions.holds
        if not all(holds(p) for p in message.partitions if p < self.ctx.options.partition_count):
            self.view_changed()
        return BatchAck(b"")

    # -- scheduling --------------------------------------------------------------------------

    def view_changed(self) -> None:
        """Schedule a rebalance soon (called on the loop for every membership change)."""
        self._schedule(self.ctx.options.gossip_interval)

    def _schedule(self, delay: float) -> None:
        loop = self.ctx.loop()
        if self._scheduled or loop is None or not self.ctx.accepting():
            return
        self._scheduled = True
        loop.call_later(delay, self._kick)

    def _kick(self) -> None:
        self._scheduled = False
        if not self.ctx.accepting():
            return
        if self._running is not None and not self._running.done():
            self.view_changed()  # one rebalance at a time; look again afterwards
            return
        loop = self.ctx.loop()
        assert loop is not None
        self._running = loop.create_task(self._rebalance_and_retry(), name="gridkv handoff")

    async def _rebalance_and_retry(self) -> None:
        try:
            await self.rebalance()
        except GridKVError as exc:
            log.warning("handoff pass failed", extra={"error": str(exc)})
        if self._gives or self._leftovers():
            # Give the views time to agree, then try again what did not get through.
            self._schedule(max(self.ctx.options.gossip_interval, min(1.0, self._timeout / 10)))

    async def stop(self) -> None:
        """Cancel a rebalance under way (the node is closing)."""
        task = self._running
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def leave(self, timeout: float) -> None:
        """A graceful leave: give every partition held here to its replicas without this node.

        Called once this node's leave was announced (its own view no longer counts it), so the
        current table says who takes over; they get everything this node holds, so nothing is
        lost even with ``replica_count = 1``. Replicas that do not see the leave yet refuse
        and are asked again, until ``timeout``.

        This node's view is not kept up to date once it left: it may count members that are
        leaving too or gone. A member that refuses the handoff as leaving, or cannot be
        reached, is passed over: the partitions go to the replicas of a table without it.
        With nobody else to give to, this node is done once all those members said they left
        (a whole fleet closing); the others are asked again meanwhile.
        """
        await self.stop()
        ctx = self.ctx
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = ctx.options.gossip_interval
        avoid: set[str] = set()
        self._avoid = avoid
        while True:
            if not self._targets():
                # Every member this node knows of refused or could not be reached. Those
                # that said they left are gone for good: with none else, this node is the
                # last to leave. The others are asked again after a while: a member that
                # refused announces its leave soon, and its notice names members that stay
                # (newcomers this node may not know yet); one unreachable may be back.
                unheard = [n for n in avoid if ctx.membership.state_of(n) in _LIVE]
                if not self.pending or not unheard:
                    if self.pending:
                        log.info(
                            "no member that stays is known to hand partitions to",
                            extra={"node_id": ctx.node_id, "partitions": self.pending},
                        )
                    return
                if loop.time() + delay >= deadline:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                avoid.difference_update(unheard)
                continue
            await self.rebalance()
            if not self.pending:
                return
            if loop.time() + delay >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        log.warning(
            "graceful leave could not hand every partition over",
            extra={"node_id": ctx.node_id, "partitions": len(self._gives)},
        )

    # -- the work --------------------------------------------------------------------------

    async def rebalance(self) -> None:
        """Compare the last table with the current one, and give what has to move."""
        ctx = self.ctx
        me = ctx.node_id
        table = self._current()
        now = self.ctx.loop_time()
        old = self._table if self._table is not None else self._without_me()
        if old is not None and old != table:
            for pending in self._gives.values():
                pending.started = now  # new replicas get the whole handoff_timeout
            live = set(ctx.membership.live_ids()).difference(self._avoid or ())
            for partition, newcomers, displaced in plan_gives(old, table, me, live):
                give = self._gives.get(partition)
                if give is None:
                    self._gives[partition] = _Give(set(newcomers), displaced, now)
                else:
                    give.targets.update(newcomers)
        if old is not None:
            self._table = table
        for partition in self._leftovers():
            if partition not in self._gives:
                self._gives[partition] = _Give(set(table.owners(partition)), True, now)
        self._refresh_local_reads()
        by_target: dict[str, list[int]] = {}
        for partition, give in list(self._gives.items()):
            owners = table.owners(partition)
            give.drop = me not in owners
            give.targets.intersection_update(owners)
            if give.drop and not give.targets:
                give.targets.update(o for o in owners if o != me)
            give.targets.discard(me)
            if not give.targets or now - give.started > self._timeout:
                self._finish(partition, give)
                continue
            for target in sorted(give.targets):  # a replayable order, whatever the hash seed
                by_target.setdefault(target, []).append(partition)
        for target, parts in by_target.items():
            given = await self._give(target, parts)
            for partition, acked in given.items():
                give = self._gives.get(partition)
                if give is not None and target in give.targets:
                    give.acked[target] = acked
                    give.targets.discard(target)
                    if not give.targets:
                        self._finish(partition, give)

    def _finish(self, partition: int, give: _Give) -> None:
        """End a give: drop what every target acknowledged (or, abandoned, all of it).

        A partition this node still replicates is never dropped; a give of it just ends.
        """
        del self._gives[partition]
        if not give.drop:
            if give.acked:
                self.partitions_given += 1
            return
        storage = self.ctx.storage
        if give.targets:  # abandoned after handoff_timeout
            # Values go: none may arrive after the wait tombstone collection counts on. The
            # tombstones stay (they may be the last copies of deletes) and are given later.
            dropped = storage.drop_values(partition)
            self.partitions_abandoned += 1
            self.entries_abandoned += dropped
            log.log(
                logging.WARNING if dropped else logging.DEBUG,
                "gave up handing a partition over after handoff_timeout; dropped its values",
                extra={
                    "node_id": self.ctx.node_id,
                    "partition": partition,
                    "entries": dropped,
                    "replicas": sorted(give.targets),
                },
            )
            return
        acked = set.intersection(*give.acked.values()) if give.acked else set()
        self.entries_dropped += storage.drop_versions(partition, acked)
        self.partitions_given += 1

    async def _give(self, target: str, parts: list[int]) -> dict[int, _Acked]:
        """Send ``target`` everything held of ``parts``, and say which are complete.

        Returns, per partition it stored in full, the versions it acknowledged.
        """
        ctx = self.ctx
        address = ctx.membership.address_of(target)
        if address is None:
            return {}
        done: dict[int, _Acked] = {}
        try:
            for partition in parts:
                acked = await self._give_partition(address, partition)
                if acked is not None:
                    done[partition] = acked
            if done:
                await ctx.messaging.request(address, HandoffDone(ctx.node_id, sorted(done)))
        except GridKVError as exc:
            if ctx.accepting():
                log.info(
                    "handoff to a replica failed; it is tried again",
                    extra={"peer": target, "partitions": len(parts), "error": str(exc)},
                )
            elif self._avoid is not None:
                # Leaving: the target is leaving too or gone (a leaving node refuses at once),
                # and this node's view may never say so. Give to the others.
                self._avoid.add(target)
                log.debug(
                    "handoff to a member failed during the leave; giving to the others",
                    extra={"node_id": ctx.node_id, "peer": target, "error": str(exc)},
                )
            return {}
        return done

    async def _give_partition(self, address: str, partition: int) -> _Acked | None:
        """Send one partition in budget-sized batches; return the versions stored.

        When the target's digest of the partition equals this node's, it holds everything
        already and nothing is sent (a co-replica, after a leave). ``None`` when the target
        refused some (it does not replicate the partition in its view yet): the give is tried
        again in a later pass.
        """
        ctx = self.ctx
        storage = ctx.storage
        records = storage.versions(partition)
        reply = await ctx.messaging.request(
            address, DigestSync(ctx.node_id, [(partition, storage.digest(partition))])
        )
        if isinstance(reply, DigestReply) and not reply.differ:
            # Equal to this node's content after the listing: a key written since has a newer
            # version here, which drop_versions keeps.
            return {(key, version, writer) for _, key, version, writer in records}
        keys = [key for _, key, _, _ in records]
        acked: _Acked = set()
        batch: list[tuple[int, Entry]] = []
        used = 0
        for start in range(0, len(keys), MAX_ITEMS_PER_MESSAGE):
            for entry in storage.entries_of(partition, keys[start : start + MAX_ITEMS_PER_MESSAGE]):
                size = entry_size(entry)
                if batch and (used + size > self._budget or len(batch) >= MAX_ITEMS_PER_MESSAGE):
                    if not await self._send(address, batch, acked):
                        return None
                    batch, used = [], 0
                batch.append((partition, entry))
                used += size
        if batch and not await self._send(address, batch, acked):
            return None
        return acked

    async def _send(self, address: str, batch: list[tuple[int, Entry]], acked: _Acked) -> bool:
        results = await self._replica.send_batch(address, batch)
        self.entries_sent += len(batch)
        for (_, entry), code in zip(batch, results, strict=True):
            if code in (STORED, HELD):
                acked.add((entry.key, entry.version, entry.writer))
        return results.count(STORED) + results.count(HELD) == len(batch)
