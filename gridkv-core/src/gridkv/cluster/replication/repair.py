"""Read repair, sans-I/O: which answer wins, which replicas to correct, and how often.

A ``quorum`` or ``all`` read collects the replicas' entries, keeps the freshest by
last-writer-wins (tombstones included, so a delete wins over the value it deleted), and sends
it to every replica that answered with nothing or with an older version. Repairs are limited
to ``read_repair_rate_limit_per_sec`` a second by a :class:`TokenBucket`, so a read storm over
a diverged partition does not become a write storm; anti-entropy catches up with the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from gridkv.storage.base import Entry, merge

__all__ = ["TokenBucket", "freshest", "stale_replicas"]


def freshest(entries: Iterable[Entry | None]) -> Entry | None:
    """The entry that wins by last-writer-wins, ``None`` when there is none."""
    winner: Entry | None = None
    for entry in entries:
        winner = merge(winner, entry)
    return winner


def stale_replicas(winner: Entry, answers: Mapping[str, Entry | None]) -> list[str]:
    """The replicas whose answer ``winner`` beats (nothing, or an older version), in order."""
    return [
        replica for replica, entry in answers.items() if entry is None or winner.wins_over(entry)
    ]


class TokenBucket:
    """At most ``rate`` events a second, with a burst of one second's worth.

    :param rate: events a second.
    :param clock: monotonic seconds (the loop's clock, virtual in simulations).
    """

    def __init__(self, rate: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self._clock = clock
        self.stamp: float | None = None  # set by the first take, on the clock it will use

    def take(self) -> bool:
        """Spend a token if there is one; whether there was."""
        now = self._clock()
        elapsed = 0.0 if self.stamp is None else now - self.stamp
        self.tokens = min(float(self.rate), self.tokens + elapsed * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
