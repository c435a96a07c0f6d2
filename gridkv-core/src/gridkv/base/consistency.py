"""The consistency levels and what each needs, for the API and the coordinator alike.

A level counts against the configured ``replica_count``, not the nodes that happen to exist,
so it is never silently weakened: ``quorum`` needs ``replica_count // 2 + 1`` replicas (the
local write counts), ``all`` needs every one.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["Consistency", "CONSISTENCY_LEVELS", "required_acks"]

Consistency = Literal["one", "quorum", "all"]
#: The levels, weakest first.
CONSISTENCY_LEVELS: tuple[str, ...] = ("one", "quorum", "all")


def required_acks(level: str, replica_count: int) -> int:
    """Replicas a level needs: 1, a majority of ``replica_count``, or all of them."""
    if level == "one":
        return 1
    if level == "quorum":
        return replica_count // 2 + 1
    return replica_count
