"""When a tombstone may be collected: the rule that keeps deletes deleted.

A tombstone is what makes a delete win over older copies of the value. Collected too early, a
copy that was somewhere else comes back through anti-entropy, handoff or repair. So a node
collects a tombstone only when all of these hold (see ``docs/replication.md``):

1. ``tombstone_ttl`` has passed since the delete, and the tombstone has been stored here at
   least until its stored ``expires_at`` (storage raises it to the arrival time);
2. every other current replica of its partition has confirmed holding it or a newer version:
   an anti-entropy comparison found the replica's digest of the tombstone's bucket equal to
   this node's after the tombstone was stored here (:meth:`TombstoneLedger.confirm`);
3. no member is held dead in this node's view: a node cut off from the cluster may still hold
   an old value, and comes back with it;
4. the view has not changed for ``quiet`` seconds (twice ``handoff_timeout``): a node that
   lost a partition keeps handing it to the new replicas for up to ``handoff_timeout`` and
   then drops the values left (tombstones stay: they only ever delete), so no old value can
   arrive after the wait.

This module is sans-I/O: it records confirmations and answers with horizons, given the view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gridkv.storage.base import BUCKETS

__all__ = ["TombstoneLedger", "ALL_BUCKETS"]

#: Every bucket of a partition.
ALL_BUCKETS: tuple[int, ...] = tuple(range(BUCKETS))
#: A horizon that lets every tombstone past its expiry go (a partition with no other replica).
_NO_LIMIT = (1 << 63,) * BUCKETS


class TombstoneLedger:
    """The confirmations of co-replicas, per partition, peer and bucket.

    ``confirm(p, peer, at_ms, buckets)`` records that ``peer`` held, at some moment, exactly
    what this node held of those buckets at its wall-clock time ``at_ms`` (read before the
    digests were): every tombstone stored here with an ``expires_at`` below ``at_ms`` was
    then on ``peer`` too, or a newer version of its key was.

    :param partition_count: partitions of the cluster.
    """

    def __init__(self, partition_count: int) -> None:
        self._confirmed: list[dict[str, list[int]]] = [{} for _ in range(partition_count)]

    def confirm(
        self, partition: int, peer: str, at_ms: int, buckets: Iterable[int] = ALL_BUCKETS
    ) -> None:
        """Record that ``peer`` matched this node's ``buckets`` of ``partition`` at ``at_ms``."""
        row = self._confirmed[partition].get(peer)
        if row is None:
            row = self._confirmed[partition][peer] = [0] * BUCKETS
        for bucket in buckets:
            if at_ms > row[bucket]:
                row[bucket] = at_ms

    def horizon(self, partition: int, owners: Sequence[str], me: str) -> Sequence[int] | None:
        """Per bucket, the ``expires_at`` below which tombstones of ``partition`` may go.

        ``None`` when some other replica in ``owners`` has confirmed nothing yet.
        """
        rows = []
        confirmed = self._confirmed[partition]
        for owner in owners:
            if owner == me:
                continue
            row = confirmed.get(owner)
            if row is None:
                return None
            rows.append(row)
        if not rows:
            return _NO_LIMIT
        if len(rows) == 1:
            return rows[0]
        return [min(column) for column in zip(*rows, strict=True)]

    def forget_except(self, members: Iterable[str]) -> None:
        """Drop the confirmations of peers that are no longer members (bounds the ledger)."""
        keep = set(members)
        for confirmed in self._confirmed:
            for peer in [p for p in confirmed if p not in keep]:
                del confirmed[peer]

    def clear(self, partition: int) -> None:
        """Forget a partition's confirmations (this node stopped replicating it)."""
        self._confirmed[partition].clear()
