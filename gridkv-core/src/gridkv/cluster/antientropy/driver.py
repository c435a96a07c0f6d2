"""Anti-entropy: co-replicas compare what they hold and exchange only what differs.

Every ``anti_entropy_interval`` a node takes each peer it shares partitions with (only peers
with a greater id, so each pair is compared once a round) and narrows differences down in
three steps, each a request and its answer:

1. :class:`~gridkv.wire.messages.DigestSync`: the digest of every shared partition (one 64-bit
   number each, kept up to date by the storage on every write); the peer answers with the
   partitions whose digests differ.
2. :class:`~gridkv.wire.messages.BucketSync`, per differing partition: its ``BUCKETS`` bucket
   digests (the partition split by key hash); the peer answers with the buckets that differ.
3. :class:`~gridkv.wire.messages.KeySync`, per range of differing buckets: the node's
   ``(key, version, writer)`` list of that hash range, in pages cut to the message budget; the
   peer answers with the entries the node lacks or holds older (also cut to the budget; the
   rest comes next round) and the keys it wants, which the node sends as replication batches.

So a partition of any size is compared with messages of bounded size, and a difference of a
few keys costs a few small messages, not the partition's whole key list. Up to
``DRILL_CONCURRENCY`` partitions are drilled at once, and a round stops drilling with a peer
once ``anti_entropy_keys_per_round`` keys have been compared or exchanged with it. Both sides
merge by last-writer-wins through the coordinator's
:meth:`~gridkv.cluster.replication.coordinator.Coordinator.store`, so tombstones win over older
values and nothing deleted comes back.

Every comparison that finds equal digests is also a confirmation, recorded on both sides in
the :class:`~gridkv.cluster.replication.tombstones.TombstoneLedger`: the peer holds every
tombstone this node held when it read its digests. Tombstones are collected only once every
replica confirmed them.

What is compared and what is sent is decided by the plain functions of
:mod:`gridkv.cluster.antientropy.diff`, which do no I/O.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gridkv.base.errors import GridKVError
from gridkv.base.log import LOGGER_NAME
from gridkv.cluster.antientropy.diff import diff_versions, differing, pages, ranges
from gridkv.cluster.replication.tombstones import TombstoneLedger
from gridkv.storage.base import BUCKETS, Entry, VersionRecord
from gridkv.wire.budget import chunks, entry_size, message_budget
from gridkv.wire.messages import (
    STORED,
    BucketReply,
    BucketSync,
    DigestReply,
    DigestSync,
    KeySync,
    KeySyncReply,
)

if TYPE_CHECKING:
    from gridkv.cluster.context import ClusterContext, Replica

__all__ = ["AntiEntropy", "DRILL_CONCURRENCY"]

log = logging.getLogger(LOGGER_NAME)
#: Partitions drilled into at once with one peer.
DRILL_CONCURRENCY = 8
#: ``(partition, digest)`` pairs per DigestSync message at most.
_DIGESTS_PER_MESSAGE = 8192


class AntiEntropy:
    """The anti-entropy rounds of one node, and its answers to its peers' rounds."""

    def __init__(self, ctx: ClusterContext, replica: Replica) -> None:
        self.ctx = ctx
        self._replica = replica
        self._budget = message_budget(ctx.options.network.max_frame_bytes)
        #: Who confirmed holding what: the tombstone collection rule reads it.
        self.ledger = TombstoneLedger(ctx.options.partition_count)
        #: Counters: rounds run, partitions, buckets and keys found different, entries
        #: received and sent. Differences are counted by the node that runs the round (of
        #: each pair of co-replicas, the one with the smaller id); a key differs when one
        #: side lacks it or holds it older, and is repaired by the exchange (a key whose
        #: entry did not fit in the answer's budget is found again next round).
        self.rounds = 0
        self.partitions_differing = 0
        self.buckets_differing = 0
        self.keys_differing = 0
        #: ``(partitions, buckets, keys)`` found differing by the last complete round.
        self.last_round = (0, 0, 0)
        self.entries_received = 0
        self.entries_sent = 0
        #: Wire bytes of the entries repaired each way (their encoded size).
        self.bytes_received = 0
        self.bytes_sent = 0

    async def run(self) -> None:
        """Run rounds forever (the node's background task)."""
        interval = self.ctx.options.anti_entropy_interval
        while True:
            await asyncio.sleep(interval)
            await self.round()

    async def round(self) -> None:
        """Compare every shared partition with each peer once."""
        ctx = self.ctx
        self.rounds += 1
        before = (self.partitions_differing, self.buckets_differing, self.keys_differing)
        table = ctx.partitions.ensure_table()
        me = ctx.node_id
        shared: dict[str, list[int]] = {}
        for partition, replicas in enumerate(table.replicas):
            if me not in replicas:
                continue
            for peer in replicas:
                if peer > me:
                    shared.setdefault(peer, []).append(partition)
        self.ledger.forget_except(m.node_id for m in ctx.membership.members())
        for peer, parts in shared.items():
            try:
                await self._sync_with(peer, parts)
            except GridKVError as exc:
                log.debug(
                    "anti-entropy with a peer failed", extra={"peer": peer, "error": str(exc)}
                )
        after = (self.partitions_differing, self.buckets_differing, self.keys_differing)
        self.last_round = (after[0] - before[0], after[1] - before[1], after[2] - before[2])

    async def _sync_with(self, peer: str, parts: list[int]) -> None:
        ctx = self.ctx
        address = ctx.membership.address_of(peer)
        if address is None:
            return
        storage = ctx.storage
        differ: list[int] = []
        for group in chunks(parts, lambda _: 1, _DIGESTS_PER_MESSAGE, _DIGESTS_PER_MESSAGE):
            at_ms = ctx.now_ms()  # before the digests: see TombstoneLedger
            digests = [(p, storage.digest(p)) for p in group]
            reply = await ctx.messaging.request(address, DigestSync(ctx.node_id, digests))
            if not isinstance(reply, DigestReply):
                return
            different = set(reply.differ)
            for partition in group:
                if partition not in different:
                    self.ledger.confirm(partition, peer, at_ms)
            differ.extend(p for p in group if p in different)
        self.partitions_differing += len(differ)
        budget = [ctx.options.anti_entropy_keys_per_round]
        queue = list(reversed(differ))

        async def worker() -> None:
            while queue and budget[0] > 0:
                budget[0] -= await self._drill(address, peer, queue.pop())

        await asyncio.gather(*(worker() for _ in range(min(DRILL_CONCURRENCY, len(queue)))))

    async def _drill(self, address: str, peer: str, partition: int) -> int:
        """Synchronise one partition with ``peer``; return the keys compared or exchanged."""
        ctx = self.ctx
        at_ms = ctx.now_ms()
        mine = ctx.storage.bucket_digests(partition)
        reply = await ctx.messaging.request(address, BucketSync(ctx.node_id, partition, mine))
        if not isinstance(reply, BucketReply):
            return 1
        different = set(reply.differ)
        same = (b for b in range(BUCKETS) if b not in different)
        self.ledger.confirm(partition, peer, at_ms, same)
        if not different:
            return 1
        self.buckets_differing += len(different)
        records = ctx.storage.versions(partition)
        handled = 0
        for low, high in ranges(different):
            for page_low, page_high, page in pages(records, low, high, self._budget):
                handled += await self._exchange(address, peer, partition, page_low, page_high, page)
        return max(1, handled)

    async def _exchange(
        self,
        address: str,
        peer: str,
        partition: int,
        low: int,
        high: int,
        page: list[VersionRecord],
    ) -> int:
        """Send one page of versions; store what comes back and send what the peer wants."""
        ctx = self.ctx
        versions = [(key, version, writer) for _, key, version, writer in page]
        reply = await ctx.messaging.request(
            address, KeySync(ctx.node_id, partition, low, high, versions)
        )
        if not isinstance(reply, KeySyncReply):
            return len(page)
        given = sum(1 for part, _ in reply.entries if part == partition)
        self.keys_differing += given + len(reply.wanted)
        store = self._replica.store
        oldest = ctx.membership.oldest_taken(peer)
        for part, entry in reply.entries:
            if part == partition and store(partition, entry, oldest) == STORED:
                self.entries_received += 1
                self.bytes_received += entry_size(entry)
        if reply.wanted:
            send = [(partition, e) for e in ctx.storage.entries_of(partition, reply.wanted)]
            self.entries_sent += len(send)
            self.bytes_sent += sum(entry_size(e) for _, e in send)
            for chunk in chunks(send, lambda pe: entry_size(pe[1]), self._budget):
                await self._replica.send_batch(address, chunk)
        return len(page) + len(reply.entries) + len(reply.wanted)

    # -- answers ---------------------------------------------------------------------------

    def on_digests(self, message: DigestSync) -> DigestReply:
        """The partitions whose digest here differs from the sender's."""
        ctx = self.ctx
        storage = ctx.storage
        count = ctx.options.partition_count
        at_ms = ctx.now_ms()
        differ = []
        for partition, digest in message.digests:
            if partition >= count:
                continue
            if storage.digest(partition) == digest:
                self.ledger.confirm(partition, message.sender, at_ms)
            else:
                differ.append(partition)
        return DigestReply(differ)

    def on_buckets(self, message: BucketSync) -> BucketReply:
        """The buckets of a partition whose digests here differ from the sender's."""
        ctx = self.ctx
        partition = message.partition
        if partition >= ctx.options.partition_count:
            return BucketReply(list(range(BUCKETS)))
        at_ms = ctx.now_ms()
        differ = differing(ctx.storage.bucket_digests(partition), message.digests)
        same = set(range(BUCKETS)).difference(differ)
        self.ledger.confirm(partition, message.sender, at_ms, same)
        return BucketReply(differ)

    def on_keys(self, message: KeySync) -> KeySyncReply:
        """What the sender lacks or holds older in a hash range, and what this node wants."""
        ctx = self.ctx
        partition = message.partition
        if partition >= ctx.options.partition_count or message.low > message.high:
            return KeySyncReply([], [], True)
        storage = ctx.storage
        mine = storage.versions(partition, message.low, message.high)
        give, wanted = diff_versions(mine, message.versions)
        entries: list[tuple[int, Entry]] = []
        used = 0
        complete = True
        for key in give:
            found = storage.entries_of(partition, (key,))
            if not found:
                continue
            size = entry_size(found[0])
            if entries and used + size > self._budget:
                complete = False
                break
            entries.append((partition, found[0]))
            used += size
        self.entries_sent += len(entries)
        self.bytes_sent += used
        return KeySyncReply(entries, wanted, complete)
