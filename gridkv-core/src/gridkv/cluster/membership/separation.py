"""Noticing the end of a separation so long that the two sides forgot each other.

Members held dead are forgotten after ``membership.dead_retention``; from then on a side of a
split no longer holds tombstones back for the other side (see
:mod:`gridkv.cluster.replication.tombstones`), and may collect tombstones of deletes the other
side never saw. When the sides meet again, the old
values the other side still holds would undo those deletes. So one side drops what it held
from before the separation, and keeps what it wrote since: the side with fewer members that
lived through the separation (a node cut off alone is always that side); on a tie, the side
without the smallest node id. A member counts as back from the other side when this node hears
from it again after a silence longer than ``threshold`` (about ``dead_retention``), and it is
the same process as then (its incarnation did not move past that moment); members this node
never heard from count too when they are that old.

The members of a side do not all learn of the merge at the same moment, so nobody takes old
data from a member that may still have to drop it: from the moment this node hears from a
member back from a long separation (or gets data from it first), it *holds* that member, and
takes no entry of its from before the separation (see :meth:`SeparationWatch.floor`). A
member that drops raises its incarnation past the moment, as a restart would; the hold ends
``margin`` after this node sees that (what the member read before it dropped may still be on
its way). A node that drops instead ends its holds, takes none for members whose silence it
has just resolved, and holds its own side's members until they have dropped too. A hold ends
after ``hold_max`` in any case: a member that did not drop by then decided to keep, and
holding it longer would only keep replicas apart.

:class:`SeparationWatch` is sans-I/O: the driver tells it when it heard from whom and which
members are live, and it answers with the moment before which this node must drop its
entries, or ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["SeparationWatch", "MAX_REMEMBERED"]

#: Members whose last contact is remembered at most.
MAX_REMEMBERED = 65_536


@dataclass(slots=True)
class _Hold:
    """A member held: what of its entries is refused, and until when."""

    #: wall ms before which its entries are refused
    cutoff: int
    #: the incarnation it must move past to show it dropped them
    until: int
    #: loop time the hold began
    since: float
    #: loop time this node first saw it had dropped, ``None`` before
    dropped_seen: float | None = None


@dataclass(slots=True)
class SeparationWatch:
    """Decides when this node must drop what it held before a long separation.

    :param me: this node's id.
    :param threshold: seconds of silence after which a member may have forgotten this node
        (``dead_retention``, less the time its detection takes).
    :param window: seconds over which the members coming back are counted together (a merge
        reaches a node through several messages).
    :param margin_ms: how long after the last membership message from the other side data
        from it may still have arrived (answers and batches in flight); what this node holds
        from before the last contact plus this margin is dropped.
    :param hold_max: seconds a hold lasts at most (by default four windows).
    """

    me: str
    threshold: float
    window: float
    margin_ms: int
    hold_max: float = 0.0
    #: member -> (loop time this node last heard from it, wall milliseconds then)
    _heard: dict[str, tuple[float, int]] = field(default_factory=dict)
    #: members heard again after a silence longer than the threshold -> wall ms of the last
    #: contact before it; and members heard for the first time
    _silent: dict[str, int] = field(default_factory=dict)
    _first: set[str] = field(default_factory=set)
    #: members back from a long separation: member -> (loop time back, wall ms of last contact)
    _back: dict[str, tuple[float, int]] = field(default_factory=dict)
    _dropped_at: float = float("-inf")
    #: members held, by member
    _held: dict[str, _Hold] = field(default_factory=dict)

    def heard(self, member: str, now: float, wall_ms: int) -> bool:
        """A message from ``member`` arrived; return whether it ended a long silence."""
        if member == self.me:
            return False
        before = self._heard.get(member)
        self._heard[member] = (now, wall_ms)
        if before is None:
            self._first.add(member)
            return False
        if now - before[0] > self.threshold:
            self._silent[member] = before[1]
            self._hold(member, before, now)
            return True
        return False

    def floor(self, member: str, incarnation: int | None, now: float) -> int:
        """The wall-clock ms before which this node takes no entry from ``member`` (0: none).

        Not zero while this node holds ``member``: its entries from before the separation
        may be ones it has yet to drop. Data from a member silent for longer than the
        threshold holds it at once (it can arrive before the member's first membership
        message).

        :param incarnation: the member's incarnation in this node's view (``None``: not in
            it); past the one the hold names, the member dropped (or restarted).
        """
        hold = self._held.get(member)
        if hold is None:
            last = self._heard.get(member)
            if last is None or now - last[0] <= self.threshold:
                return 0
            hold = self._hold(member, last, now)
            if hold is None:
                return 0
        if now - hold.since > (self.hold_max or 4 * self.window):
            del self._held[member]
            return 0
        if incarnation is not None and incarnation > hold.until:
            if hold.dropped_seen is None:
                hold.dropped_seen = now
            elif now - hold.dropped_seen > self.margin_ms / 1000:
                del self._held[member]
                return 0
        return hold.cutoff

    def holding(self) -> list[str]:
        """The members this node holds (takes no entry from before their separation)."""
        return sorted(self._held)

    def peek(self, member: str, now: float) -> int:
        """What :meth:`floor` would say at most, changing nothing (for other threads).

        The cutoff of a hold in effect, or of the one :meth:`floor` would make now; 0 when
        there is none. It may say more than :meth:`floor` (a hold about to end): a caller
        that refuses an entry on it asks again on the loop.
        """
        hold = self._held.get(member)
        if hold is not None:
            return hold.cutoff
        last = self._heard.get(member)
        if last is None or now - last[0] <= self.threshold or last[0] < self._dropped_at:
            return 0
        return last[1] + self.margin_ms

    def _hold(self, member: str, last: tuple[float, int], now: float) -> _Hold | None:
        """Hold ``member``, last heard at ``last`` (loop time, wall ms) before its silence."""
        if last[0] < self._dropped_at:
            return None  # this node dropped for this very separation: the member's side keeps
        hold = self._held[member] = _Hold(last[1] + self.margin_ms, last[1], now)
        return hold

    def decide(self, now: float, live: Mapping[str, int]) -> int | None:
        """Whether this node drops its old entries now.

        :param live: every live member (this node too) and its incarnation now (wall-clock
            milliseconds at its start, plus refutations: a restarted process has a greater one).
        :returns: the wall-clock milliseconds before which this node must drop its entries
            (the last contact with the other side, plus the margin), or ``None``.
        """
        for member in [m for m in self._silent if m in live]:
            since = self._silent.pop(member)
            # The same process as before the silence: a restart holds nothing old.
            if live[member] <= since:
                self._back[member] = (now, since)
        if self._back:
            # Members this node never heard from, alive since before the separation, were on
            # the other side too.
            before = max(since for _, since in self._back.values())
            for member in [m for m in self._first if m in live]:
                if live[member] <= before:
                    self._back[member] = (now, before)
                    self._hold(member, (now, before), now)
        self._first.difference_update(live)
        for gone in [m for m, (at, _) in self._back.items() if now - at > self.window]:
            del self._back[gone]
        if not self._back or now - self._dropped_at <= self.window:
            return None
        back = {m for m in self._back if m in live}
        recent = {m for m, (at, _) in self._heard.items() if now - at <= self.threshold}
        mine = {self.me} | ((set(live) - back) & recent)
        if not back or len(back) < len(mine) or (len(back) == len(mine) and min(mine) < min(back)):
            return None  # the other side drops
        self._dropped_at = now
        last_contact = max(self._back[m][1] for m in back)
        self._back.clear()
        drop_before = last_contact + self.margin_ms
        # What the other side holds from before is what this node keeps from now on; the
        # members of this side that were there before the separation have to drop too.
        self._held = {
            member: _Hold(drop_before, last_contact, now)
            for member in mine - {self.me}
            if live[member] <= last_contact  # not restarted, nor dropped, since
        }
        return drop_before

    def prune(self, now: float, keep: Iterable[str], horizon: float) -> None:
        """Forget when members not in ``keep`` were last heard, past ``horizon`` seconds.

        At most ``MAX_REMEMBERED`` members are remembered, the longest silent forgotten first.
        """
        members = set(keep)
        for member in [
            m for m, (at, _) in self._heard.items() if m not in members and now - at > horizon
        ]:
            del self._heard[member]
            self._silent.pop(member, None)
            self._first.discard(member)
            self._held.pop(member, None)
        if len(self._heard) > MAX_REMEMBERED:
            for member, _ in sorted(self._heard.items(), key=lambda item: item[1][0])[
                : len(self._heard) - MAX_REMEMBERED
            ]:
                del self._heard[member]
