"""Anti-entropy: co-replicas compare what they hold and exchange only what differs.

Every ``anti_entropy_interval`` a node takes each peer it shares partitions with (only peers
with a greater id, so each pair is compared once a round) and sends the digest of every shared
partition (:class:`~gridkv.wire.messages.DigestSync`): one 64-bit number each, kept up to date
by the storage on every write. The peer answers with the partitions whose digests differ, and
the node drills into those: it sends a partition's ``(key, version, writer)`` list
(:class:`~gridkv.wire.messages.KeySync`); the peer answers with the entries the node lacks or
holds older, and the keys it wants in return, which the node sends as a replication batch. Up
to ``DRILL_CONCURRENCY`` partitions are drilled at once, and a round stops drilling with a peer
once ``anti_entropy_keys_per_round`` keys have been compared or exchanged with it. Both sides
merge by last-writer-wins, so tombstones win over older values and nothing deleted comes back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gridkv.errors import GridKVError
from gridkv.hlc import version_wins
from gridkv.log import LOGGER_NAME
from gridkv.storage.base import Entry
from gridkv.wire.messages import (
    DigestReply,
    DigestSync,
    KeySync,
    KeySyncReply,
    ReplicateBatch,
)

if TYPE_CHECKING:
    from gridkv.node import Node

__all__ = ["AntiEntropy"]

log = logging.getLogger(LOGGER_NAME)
#: Partitions drilled into at once with one peer.
DRILL_CONCURRENCY = 8


class AntiEntropy:
    """The anti-entropy rounds of one node, and its answers to its peers' rounds."""

    def __init__(self, node: Node) -> None:
        self.node = node
        #: Counters: rounds run, partitions found different, entries received and sent.
        self.rounds = 0
        self.partitions_differing = 0
        self.entries_received = 0
        self.entries_sent = 0

    async def run(self) -> None:
        """Run rounds forever (the node's background task)."""
        interval = self.node.options.anti_entropy_interval
        while True:
            await asyncio.sleep(interval)
            await self.round()

    async def round(self) -> None:
        """Compare every shared partition with each peer once."""
        node = self.node
        self.rounds += 1
        table = node.ensure_table()
        shared: dict[str, list[int]] = {}
        for partition, replicas in enumerate(table.replicas):
            if node.node_id not in replicas:
                continue
            for peer in replicas:
                if peer > node.node_id:
                    shared.setdefault(peer, []).append(partition)
        for peer, parts in shared.items():
            try:
                await self._sync_with(peer, parts)
            except GridKVError as exc:
                log.debug(
                    "anti-entropy with a peer failed", extra={"peer": peer, "error": str(exc)}
                )

    async def _sync_with(self, peer: str, parts: list[int]) -> None:
        node = self.node
        address = node.membership.address_of(peer)
        if address is None:
            return
        digests = [(p, node.storage.digest(p)) for p in parts]
        reply = await node.request(address, DigestSync(node.node_id, digests))
        if not isinstance(reply, DigestReply):
            return
        self.partitions_differing += len(reply.differ)
        budget = [node.options.anti_entropy_keys_per_round]
        queue = list(reversed(reply.differ))

        async def worker() -> None:
            while queue and budget[0] > 0:
                budget[0] -= await self._drill(address, queue.pop())

        await asyncio.gather(*(worker() for _ in range(min(DRILL_CONCURRENCY, len(queue)))))

    async def _drill(self, address: str, partition: int) -> int:
        """Synchronise one partition with the peer at ``address``; return the keys handled."""
        node = self.node
        versions = [(e.key, e.version, e.writer) for e in node.storage.entries(partition)]
        reply = await node.request(address, KeySync(node.node_id, partition, versions))
        if not isinstance(reply, KeySyncReply):
            return len(versions)
        for part, entry in reply.entries:
            if part != partition:
                continue
            node.hlc.update(entry.version)
            if node.storage.apply(partition, entry):
                self.entries_received += 1
        if reply.wanted:
            wanted = set(reply.wanted)
            send = [(partition, e) for e in node.storage.entries(partition) if e.key in wanted]
            if send:
                self.entries_sent += len(send)
                await node.request(address, ReplicateBatch(node.node_id, send))
        return len(versions) + len(reply.entries)

    # -- answers ---------------------------------------------------------------------------

    def on_digests(self, message: DigestSync) -> DigestReply:
        """The partitions whose digest here differs from the sender's."""
        storage = self.node.storage
        count = self.node.options.partition_count
        return DigestReply([p for p, d in message.digests if p < count and storage.digest(p) != d])

    def on_keys(self, message: KeySync) -> KeySyncReply:
        """What the sender lacks or holds older, and what this node wants from it."""
        if message.partition >= self.node.options.partition_count:
            return KeySyncReply([], [])
        theirs = {k: (v, w) for k, v, w in message.versions}
        give: list[tuple[int, Entry]] = []
        for entry in self.node.storage.entries(message.partition):
            other = theirs.pop(entry.key, None)
            if other is None or version_wins(entry.version, entry.writer, *other):
                give.append((message.partition, entry))
            elif version_wins(other[0], other[1], entry.version, entry.writer):
                theirs[entry.key] = other
        wanted = list(theirs)
        self.entries_sent += len(give)
        return KeySyncReply(give, wanted)
