"""The gossip queue: which member records a message carries, each a bounded number of times.

SWIM spreads every update by piggybacking it on the messages a node sends anyway. Each update
is carried at most ``retransmit_mult * ceil(log10(n + 1))`` times by each node, the least-sent
first, so a new update goes out at once and an old one makes room. The queue holds one record
per member (the newest replaces the older), so it never holds more than the view does.
"""

from __future__ import annotations

from gridkv.wire.messages import MemberRecord

__all__ = ["Dissemination"]


class Dissemination:
    """Member records waiting to be gossiped, bucketed by how often each was sent."""

    def __init__(self) -> None:
        # _sent[k] holds the records sent k times, so the least-sent are found at once.
        self._sent: list[dict[str, MemberRecord]] = [{}]
        self._times: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._times)

    def __len__(self) -> int:
        return len(self._times)

    def add(self, record: MemberRecord) -> None:
        """Queue ``record``, replacing any record about the same member, as never sent."""
        node_id = record.node_id
        times = self._times.get(node_id)
        if times is not None:
            del self._sent[times][node_id]
        self._times[node_id] = 0
        self._sent[0][node_id] = record

    def take(self, room: int, limit: int) -> list[MemberRecord]:
        """Up to ``room`` records to send now, the least-sent first.

        Each counts as sent once more; a record sent ``limit`` times leaves the queue.
        """
        if not self._times or room <= 0:
            return []
        picked: list[tuple[int, str, MemberRecord]] = []
        for times, bucket in enumerate(self._sent):
            for node_id, record in bucket.items():
                picked.append((times, node_id, record))
                if len(picked) == room:
                    break
            if len(picked) == room:
                break
        sent = self._sent
        for times, node_id, record in picked:
            del sent[times][node_id]
            if times + 1 >= limit:
                del self._times[node_id]
                continue
            if len(sent) == times + 1:
                sent.append({})
            sent[times + 1][node_id] = record
            self._times[node_id] = times + 1
        return [record for _, _, record in picked]
