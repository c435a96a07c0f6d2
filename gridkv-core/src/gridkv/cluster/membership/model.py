"""The members, the configuration and the outputs of the SWIM state machine.

:class:`Member` is a member as one node sees it; :class:`SwimConfig` the protocol's timings
and fan-outs; :class:`Send` and :class:`Sync` what :class:`~gridkv.cluster.membership.swim.Swim`
asks its driver to send; :class:`Change` a state change it reports. ``Probe``, ``Suspicion``
and ``Relay`` are the state machine's own bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gridkv.base.options import Options
from gridkv.wire.messages import MemberRecord, Message, PushPull

__all__ = [
    "MemberState",
    "ALIVE",
    "SUSPECT",
    "DEAD",
    "LEFT",
    "CODE",
    "STATE",
    "Member",
    "SwimConfig",
    "Send",
    "Sync",
    "Change",
    "Output",
    "Probe",
    "Suspicion",
    "Relay",
]

MemberState = Literal["alive", "suspect", "dead", "left"]
ALIVE: MemberState = "alive"
SUSPECT: MemberState = "suspect"
DEAD: MemberState = "dead"
LEFT: MemberState = "left"
#: The wire code of each state, and the state of each code.
CODE: dict[MemberState, int] = {ALIVE: 0, SUSPECT: 1, DEAD: 2, LEFT: 3}
STATE: tuple[MemberState, ...] = (ALIVE, SUSPECT, DEAD, LEFT)


@dataclass(slots=True)
class Member:
    """A member as this node sees it."""

    node_id: str
    address: str
    incarnation: int
    state: MemberState
    since: float
    #: the member's own signed statement of its latest alive or left record (empty without
    #: authentication), passed on with the record
    proof: bytes = b""

    def record(self, origin: str) -> MemberRecord:
        """This member's state as a gossip record asserted by ``origin``."""
        proof = self.proof if self.state in (ALIVE, LEFT) else b""
        return MemberRecord(
            self.node_id, self.address, self.incarnation, CODE[self.state], origin, proof
        )


@dataclass(frozen=True, slots=True)
class SwimConfig:
    """Timing and fan-out of the protocol; see ``docs/membership.md``.

    :ivar probe_interval: seconds between probes (``gossip_interval``).
    :ivar probe_timeout: seconds to wait for a direct ack before asking others.
    :ivar failure_timeout: seconds from the probe until the target is suspected.
    :ivar suspicion_min: shortest suspicion (``suspect_timeout``), scaled by ``log10(n)``.
    :ivar suspicion_max_mult: the suspicion starts at this multiple of the minimum.
    :ivar indirect_checks: members asked to probe indirectly.
    :ivar retransmit_mult: each update is sent ``retransmit_mult * ceil(log10(n + 1))`` times.
    :ivar gossip_fanout: random members each update batch is pushed to per period.
    :ivar max_piggyback: records carried by one message at most.
    :ivar push_pull_interval: seconds between full state syncs with a live member.
    :ivar reconnect_interval: seconds between syncs with a member held dead.
    :ivar awareness_max: highest local health score.
    :ivar dead_retention: seconds a dead member's record is kept (it refuses stale gossip).
    """

    probe_interval: float = 0.1
    probe_timeout: float = 0.1
    failure_timeout: float = 0.3
    suspicion_min: float = 0.5
    suspicion_max_mult: float = 2.5
    indirect_checks: int = 3
    retransmit_mult: int = 4
    gossip_fanout: int = 2
    max_piggyback: int = 16
    push_pull_interval: float = 10.0
    reconnect_interval: float = 1.0
    awareness_max: int = 8
    dead_retention: float = 3600.0

    @classmethod
    def from_options(cls, options: Options) -> SwimConfig:
        """The configuration a node's options describe."""
        m = options.membership
        return cls(
            probe_interval=options.gossip_interval,
            probe_timeout=min(options.failure_timeout, m.probe_timeout),
            failure_timeout=options.failure_timeout,
            suspicion_min=options.suspect_timeout,
            suspicion_max_mult=m.suspicion_max_mult,
            indirect_checks=m.indirect_checks,
            retransmit_mult=m.retransmit_mult,
            gossip_fanout=m.gossip_fanout,
            max_piggyback=m.max_piggyback,
            push_pull_interval=m.push_pull_interval,
            reconnect_interval=m.reconnect_interval,
            awareness_max=m.awareness_max,
            dead_retention=m.dead_retention,
        )


@dataclass(frozen=True, slots=True)
class Send:
    """Output: send ``message`` one way to ``address``."""

    address: str
    message: Message


@dataclass(frozen=True, slots=True)
class Sync:
    """Output: run a push-pull state sync with ``address`` (a request and its answer)."""

    address: str
    message: PushPull


@dataclass(frozen=True, slots=True)
class Change:
    """A member's state changed in this node's view (``old`` is ``None`` for a new member)."""

    member: Member
    old: MemberState | None
    new: MemberState


#: What the state machine asks its driver to send.
Output = Send | Sync


@dataclass(slots=True)
class Probe:
    """The probe in progress: its target, sequence number, deadlines and nacks."""

    target: str
    seq: int
    direct_deadline: float
    final_deadline: float
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class Suspicion:
    """A suspicion of a member: since when, of which incarnation, confirmed by whom."""

    start: float
    incarnation: int
    confirmers: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Relay:
    """An indirect probe relayed for another member: whom to answer, and by when."""

    origin_addr: str
    origin_seq: int
    deadline: float
