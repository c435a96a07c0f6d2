"""Membership: who is in the cluster. SWIM with Lifeguard is the built-in protocol."""

from __future__ import annotations

from gridkv.cluster.membership.base import Membership, MembershipFactory
from gridkv.cluster.membership.driver import SwimMembership
from gridkv.cluster.membership.swim import ALIVE, DEAD, LEFT, SUSPECT, Swim, SwimConfig

__all__ = [
    "Membership",
    "MembershipFactory",
    "SwimMembership",
    "Swim",
    "SwimConfig",
    "ALIVE",
    "SUSPECT",
    "DEAD",
    "LEFT",
]
