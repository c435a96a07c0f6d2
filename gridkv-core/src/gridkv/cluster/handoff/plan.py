"""Who gives which partition to whom when the partition table changes, decided without I/O."""

from __future__ import annotations

from gridkv.cluster.ring import PartitionTable

__all__ = ["plan_gives"]


def plan_gives(
    old: PartitionTable, new: PartitionTable, me: str, live: set[str]
) -> list[tuple[int, list[str], bool]]:
    """What this node gives when the table changes from ``old`` to ``new``.

    Returns ``(partition, new replicas to give to, whether this node stops replicating it)``
    for each partition this node held that gained replicas, when this node is the one to give
    (it lost the partition, or it is the first former replica still alive and no former
    replica that lost the partition is alive).
    """
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
    return gives
