"""SWIM with Lifeguard, written sans-I/O.

:class:`Swim` is a state machine: it takes messages and the current time and returns what to
send; it never reads a clock, sleeps or touches a socket. The driver
(:mod:`gridkv.cluster.membership.driver`) runs it on an event loop. What it implements:

SWIM (Das, Gupta and Motivala, 2002)
    * A probe each period to the next member of a shuffled round-robin list (every member is
      probed once per pass; the list is reshuffled each pass).
    * No ack within the direct time-out: ``indirect_checks`` other members are asked to probe
      the target (ping-req) and relay its ack.
    * No ack by the end of the probe: the target is *suspected*, with its incarnation number.
      A suspected member refutes by raising its incarnation and announcing itself alive. A
      suspicion not refuted in time makes the member *dead*.
    * Every update is piggybacked on probe traffic (pings and acks) and pushed to
      ``gossip_fanout`` random members each period, each update sent at most
      ``retransmit_mult * ceil(log10(n + 1))`` times by each node.
    * Every ``push_pull_interval`` a full state sync with one random member; failed members are
      tried too, so two sides of a healed partition find each other again. A node that sees
      no live member at all also tries its seeds again, every ``reconnect_interval``: after a
      separation longer than ``dead_retention`` both sides have forgotten each other.

Lifeguard (Dadgar, Phillips and Currey, 2018)
    * Local health awareness: a score (0 to ``awareness_max``) raised by missed nacks (or by a
      failed probe that asked no relay), by stalls and by having to refute a suspicion about
      oneself, lowered by successful probes.
      Probe period and time-outs are multiplied by ``score + 1``, so a node that is itself
      slow stops accusing healthy members.
    * Nacks: a relay that cannot reach the target answers with a nack; a prober that gets
      fewer nacks than it asked for knows its own messages are in trouble.
    * Dynamic suspicion: the time-out starts at ``suspicion_max_mult`` times the minimum and
      shrinks logarithmically with each independent confirmation, down to the minimum.
    * The suspected member is told first: probes of a suspected member carry the suspicion.

Incarnations start at the node's wall-clock time in milliseconds, so a node restarted with the
same id outranks every record of its previous life and rejoins at once; records about an older
incarnation (stale gossip) never resurrect a dead member.

Limits against buggy or hostile peers: a record whose incarnation lies more than
``INCARNATION_MARGIN`` past this node's own clock is ignored (incarnations are wall-clock
milliseconds plus refutations), so refuting can never overflow 64 bits; one unsolicited
message adds at most ``NEW_MEMBERS_PER_MESSAGE`` members this node did not know; a ping-req is
relayed only to a member of this node's view, at the address the view holds; and answers go
to the address the view holds for a live member, and to an address a message merely claims
only ``STRANGER_REPLIES`` times a second.
"""

from __future__ import annotations

import math
import random

from gridkv.cluster.membership.dissemination import Dissemination
from gridkv.cluster.membership.model import (
    ALIVE,
    CODE,
    DEAD,
    LEFT,
    STATE,
    SUSPECT,
    Change,
    Member,
    MemberState,
    Output,
    Probe,
    Relay,
    Send,
    Suspicion,
    SwimConfig,
    Sync,
)
from gridkv.security.base import RecordProofs
from gridkv.wire.messages import (
    MemberRecord,
    Message,
    PushPull,
    PushPullReply,
    SwimAck,
    SwimGossip,
    SwimNack,
    SwimPing,
    SwimPingReq,
)

__all__ = [
    "INCARNATION_MARGIN",
    "ALIVE",
    "SUSPECT",
    "DEAD",
    "LEFT",
    "MemberState",
    "Member",
    "SwimConfig",
    "Send",
    "Sync",
    "Change",
    "Output",
    "Swim",
]

#: How far past this node's own clock (in milliseconds, as incarnations count) an incarnation
#: may lie: about 50 days of clock difference or four billion refutations.
INCARNATION_MARGIN = 1 << 32
#: Members one unsolicited message may add that this node did not know. A join brings one
#: (the joiner), and news of joins spreads a few at a time; a message naming hundreds of
#: strangers is a bug or an attack.
NEW_MEMBERS_PER_MESSAGE = 4
#: Answers a second, in all, to addresses that messages claim rather than this view holds (a
#: stranger's, or a member's held dead): they let a joiner or a restarted member through at
#: once, and keep a peer that invents addresses from making this node dial them at will.
STRANGER_REPLIES = 20
#: Seconds after a member's leave during which this node, leaving too, tells it so.
LEFT_NOTICE_WINDOW = 60.0


class Swim:
    """The membership state machine of one node.

    :param node_id: this node's id.
    :param address: this node's address.
    :param incarnation: the starting incarnation (the driver passes wall-clock milliseconds).
    :param config: timings and fan-outs.
    :param rng: the source of every random choice (seeded in simulations).
    :param now: the current time in seconds (any monotonic clock).
    :param proofs: with authentication on, signs this node's own alive and left records
        and checks others' (``None``: records are taken as they come).
    """

    def __init__(
        self,
        node_id: str,
        address: str,
        incarnation: int,
        config: SwimConfig,
        rng: random.Random,
        now: float,
        proofs: RecordProofs | None = None,
    ) -> None:
        self.config = config
        self.rng = rng
        self.proofs = proofs
        self.me = Member(node_id, address, incarnation, ALIVE, now)
        self._proved: tuple[str, int, MemberState, bytes] | None = None
        self.members: dict[str, Member] = {}
        #: State changes not yet taken by the driver.
        self.changes: list[Change] = []
        self.awareness = 0
        self._seq = 0
        self._probe: Probe | None = None
        self._order: list[str] = []
        self._order_pos = 0
        #: A member others suspect, probed next out of turn so this node confirms or clears
        #: the suspicion within one probe instead of waiting for its round-robin turn.
        self._probe_soon: str | None = None
        self._next_probe = now
        self._next_gossip = now + config.probe_interval
        self._next_sync = now + config.push_pull_interval * (0.5 + rng.random())
        self._next_reconnect = now + config.reconnect_interval * (0.5 + rng.random())
        self._relays: dict[int, Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        #: Updates waiting to be gossiped (one per member, the newest).
        self.updates = Dissemination()
        self._others_live = 0
        self._next_prune = now
        # When the next tick() is due (the earliest deadline); a tick much later than this
        # means this node itself was not running.
        self._due = now
        # Sends that the rules decide on while applying records (refutations), taken by the
        # next handle() or tick().
        self._urgent: list[Output] = []
        # The sender of the message being handled: its id, the address it claims, and the
        # address answers go to (worked out once per message, see _reply_address). And when
        # each member (by id, or by address where only that is known) was last told
        # something directly, to rate-limit the corrections below.
        self._sender: str | None = None
        self._claimed: str | None = None
        self._reply: str | bool | None = False  # False: not worked out yet
        self._stranger_tokens = float(STRANGER_REPLIES)
        self._stranger_at = now
        self._told: dict[str, float] = {}
        self.left = False
        # The wall clock in incarnation units, from the starting incarnation and the time.
        self._wall_origin = incarnation - int(now * 1000)
        # New members one message may still add (None: no limit, for answers we asked for).
        self._new_allowed: int | None = None
        #: Records ignored: incarnations out of bounds, or new members over a message's limit.
        self.refused_records = 0
        #: Probes sent, acknowledged directly, failed (a suspicion started or confirmed), and
        #: refutations of suspicions about this node (counters for metrics). A probe
        #: answered only through a relay is neither acknowledged directly nor failed.
        self.probes = 0
        self.probes_acked = 0
        self.probes_failed = 0
        self.refutations = 0
        #: Suspicions of other members taken into this node's view (counters for metrics):
        #: raised by this node's own failed probes, and heard from others. Each is a member
        #: becoming suspect at an incarnation (a confirmation of a suspicion held is not one).
        self.suspicions_raised = 0
        self.suspicions_heard = 0
        #: Seed addresses, tried again while no other member is alive (set by the driver).
        self.seeds: list[str] = []
        self._seeds_tried = now
        self._seed_turn = 0
        self._had_peers = False

    # -- views ---------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """This node's id."""
        return self.me.node_id

    def live_members(self) -> list[Member]:
        """Members alive or suspected, this node included.

        Safe to call from another thread: the member list is copied in one step first.
        """
        out = [m for m in list(self.members.values()) if m.state in (ALIVE, SUSPECT)]
        if not self.left:
            out.append(self.me)
        return out

    def size(self) -> int:
        """Number of members alive or suspected, this node included."""
        return self._others_live + 1

    def state_of(self, node_id: str) -> MemberState | None:
        """A member's state in this view, ``None`` when unknown."""
        if node_id == self.me.node_id:
            return self.me.state
        m = self.members.get(node_id)
        return None if m is None else m.state

    def own_record(self) -> MemberRecord:
        """This node's own record, with its signed proof when authentication is on."""
        me = self.me
        proofs = self.proofs
        if proofs is not None:
            stamp = (me.address, me.incarnation, me.state, proofs.signer)
            if self._proved != stamp:
                me.proof = proofs.prove(me.node_id, me.address, me.incarnation, CODE[me.state])
                self._proved = stamp
        return me.record(me.node_id)

    def local_state(self) -> list[MemberRecord]:
        """Every member record this node holds, itself included (for push-pull)."""
        me = self.node_id
        return [self.own_record()] + [m.record(me) for m in self.members.values()]

    def scaled(self, seconds: float) -> float:
        """``seconds`` stretched by the local health score (Lifeguard)."""
        return seconds * (self.awareness + 1)

    def retransmit_limit(self) -> int:
        """How many times each update is sent by this node."""
        return self.config.retransmit_mult * max(1, math.ceil(math.log10(self.size() + 1)))

    def suspicion_timeout(self, confirmations: int) -> float:
        """Seconds a suspicion lasts after ``confirmations`` independent accusations."""
        n = self.size()
        low = self.config.suspicion_min * max(1.0, math.log10(max(n, 1)))
        high = self.config.suspicion_max_mult * low
        expected = max(0, min(3, n - 2))
        if expected == 0 or high <= low:
            return low
        done = min(max(confirmations - 1, 0), expected)
        return max(low, high - (high - low) * math.log(done + 1) / math.log(expected + 1))

    def next_deadline(self) -> float:
        """The earliest time :meth:`tick` has work to do."""
        times = [self._next_sync]
        if self._others_live < len(self.members):
            times.append(self._next_reconnect)
        if self.seeds:
            times.append(self._seed_due())
        if self.updates:
            times.append(self._next_gossip)
        probe = self._probe
        if probe is None:
            times.append(self._next_probe)
        else:
            # The next probe waits for this one to finish.
            times.append(probe.final_deadline if probe.indirect else probe.direct_deadline)
        times.extend(r.deadline for r in self._relays.values())
        times.extend(
            s.start + self.suspicion_timeout(len(s.confirmers)) for s in self._suspicions.values()
        )
        return min(times)

    # -- inputs --------------------------------------------------------------------------

    def announce(self, *, bump: bool = True) -> MemberRecord:
        """Gossip this node's own record, with a raised incarnation when ``bump``."""
        if bump:
            self.me.incarnation += 1
        record = self.own_record()
        self._enqueue(record)
        return record

    def renew(self, now: float) -> MemberRecord:
        """Raise this node's incarnation to the wall clock now, and gossip it.

        As a restart would: the node dropped what it held (it was forgotten after a long
        separation), and the members holding its old entries back (see
        :mod:`~gridkv.cluster.membership.separation`) may take its data again.
        """
        self.me.incarnation = max(self.me.incarnation + 1, self._wall_origin + int(now * 1000))
        return self.announce(bump=False)

    def join_message(self) -> PushPull:
        """The push-pull request a joining node sends to a seed."""
        return PushPull(self.node_id, self.me.address, True, self.local_state())

    def tick(self, now: float) -> list[Output]:
        """Advance the timers to ``now``; return what to send."""
        out: list[Output] = []
        if self.left:
            return out
        self._catch_up(now)
        self._tick_probe(now, out)
        self._tick_relays(now, out)
        self._tick_suspicions(now)
        if self.updates and now >= self._next_gossip:
            self._gossip(out)
            self._next_gossip = now + self.config.probe_interval
        elif now >= self._next_gossip:
            self._next_gossip = now + self.config.probe_interval
        if now >= self._next_sync:
            self._next_sync = now + self.config.push_pull_interval
            self._sync(out, live=True)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval
            self._sync(out, live=False)
        if self.seeds and now >= self._seed_due():
            self._try_seeds(now, out)
        self._forget_old_dead(now)
        self._take_urgent(out)
        self._due = self.next_deadline()
        return out

    def _try_seeds(self, now: float, out: list[Output]) -> None:
        """Sync with a seed that is not a live member, if any (one a turn).

        After a separation longer than ``dead_retention`` both sides have forgotten each
        other: only a seed on the other side brings them together again. A node that sees no
        live member at all (though it had some) tries every ``reconnect_interval``; one that
        merely misses a seed, every ``push_pull_interval``.
        """
        self._seeds_tried = now
        if not self._had_peers:
            return  # not joined yet: the driver's join does this
        if not self._others_live:
            candidates = self.seeds
        else:
            live = {m.address for m in self.members.values() if m.state in (ALIVE, SUSPECT)}
            candidates = [seed for seed in self.seeds if seed not in live]
        if candidates:
            seed = candidates[self._seed_turn % len(candidates)]
            self._seed_turn += 1
            out.append(Sync(seed, self.join_message()))

    def _seed_due(self) -> float:
        """When the seeds are looked at next: sooner while no other member is alive."""
        cfg = self.config
        lonely = not self._others_live and self._had_peers
        return self._seeds_tried + (cfg.reconnect_interval if lonely else cfg.push_pull_interval)

    def _take_urgent(self, out: list[Output]) -> None:
        if self._urgent:
            out.extend(self._urgent)
            self._urgent.clear()

    def _catch_up(self, now: float) -> None:
        """Notice that this node itself was stalled, and do not blame others for it.

        When the clock jumped well past the timers (a GC pause, an overloaded host, a
        suspended VM), the acks that arrived meanwhile are still unread. Deadlines move by
        the gap so they get their chance, and the local health score rises (Lifeguard).
        """
        gap = now - self._due
        if gap <= self.config.probe_timeout:
            return
        self._raise_awareness(1)
        probe = self._probe
        if probe is not None:
            probe.direct_deadline += gap
            probe.final_deadline += gap
        for relay in self._relays.values():
            relay.deadline += gap
        for suspicion in self._suspicions.values():
            suspicion.start += gap

    def handle(self, now: float, message: Message) -> tuple[list[Output], Message | None]:
        """Take a membership message; return what to send and the answer (for requests).

        The message may add at most ``NEW_MEMBERS_PER_MESSAGE`` members this node did not know.
        """
        out: list[Output] = []
        sender = getattr(message, "sender", None)
        self._new_allowed = NEW_MEMBERS_PER_MESSAGE
        if self.left:
            # Gone: answer nothing, but keep the view current (who else left) while this node
            # hands its partitions over.
            records = getattr(message, "updates", None) or getattr(message, "states", None) or []
            for record in records:
                if record.node_id != self.node_id:
                    self.apply(now, record)
            self._new_allowed = None
            self._urgent.clear()
            # A live member that still talks to this node does not know it left (it joined
            # after the announcement, or the notice was lost), and would refuse the
            # partitions this node hands it: tell it, where this view holds it.
            member = self.members.get(sender) if sender is not None else None
            if (
                member is not None
                and member.state in (ALIVE, SUSPECT)
                and self._may_tell(now, member.node_id)
            ):
                notice = SwimGossip(self.node_id, self.me.address, [self.own_record()])
                out.append(Send(member.address, notice))
            return out, None
        self._sender = sender
        self._claimed = getattr(message, "sender_addr", None)
        self._reply = False
        try:
            return self._handle(now, message, out)
        finally:
            self._new_allowed = None
            if sender is not None:
                self._correct_sender(now, sender, out)
            self._sender = self._claimed = None
            self._reply = False
            self._due = self.next_deadline()

    def _reply_address(self, now: float) -> str | None:
        """Where answers to the message being handled go, or ``None``: nowhere.

        A live member is answered at the address this view holds for it, whatever the message
        claims. Anyone else (a member held dead that came back, one whose arrival was gossiped
        past this node, or a stranger) at the address it claims, but only
        ``STRANGER_REPLIES`` times a second in all (or once a second per member, if more):
        otherwise anyone could make this node dial any address, as fast as it can send.
        """
        if self._reply is not False:
            return self._reply if isinstance(self._reply, str) else None
        sender = self._sender
        m = self.members.get(sender) if sender is not None else None
        if m is not None and m.state in (ALIVE, SUSPECT):
            reply: str | None = m.address
        elif self._claimed is None:
            reply = m.address if m is not None else None
        else:
            rate = max(STRANGER_REPLIES, len(self.members))
            self._stranger_tokens = min(
                float(rate), self._stranger_tokens + (now - self._stranger_at) * rate
            )
            self._stranger_at = now
            reply = None
            if self._stranger_tokens >= 1:
                self._stranger_tokens -= 1
                reply = self._claimed
        self._reply = reply if reply is not None else None
        return reply

    def _correct_sender(self, now: float, sender: str, out: list[Output]) -> None:
        """A member we suspect, hold dead or do not know just talked to us: fix our view.

        A suspected or dead sender is told, so that it refutes; an unknown one (its arrival
        was gossiped past us) gets a full state sync. Either way this view is corrected
        within a round trip, whether or not gossip would have reached us.
        """
        if sender not in self.members and sender != self.node_id:
            if self._may_tell(now, sender):
                addr = self._reply_address(now)
                if addr is not None:
                    message = PushPull(self.node_id, self.me.address, False, self.local_state())
                    out.append(Sync(addr, message))
            return
        m = self.members.get(sender)
        if m is None or m.state not in (SUSPECT, DEAD) or not self._may_tell(now, sender):
            return
        record = m.record(self.node_id)
        # Where it spoke from: a member restarted at a new address is not at the old one.
        addr = self._reply_address(now) or m.address
        out.append(Send(addr, SwimGossip(self.node_id, self.me.address, [record])))

    def _may_tell(self, now: float, node_id: str) -> bool:
        if now - self._told.get(node_id, -1e18) < self.config.probe_interval:
            return False
        self._told[node_id] = now
        if len(self._told) > 4 * (len(self.members) + 1):
            self._told.clear()
        return True

    def _handle(
        self, now: float, message: Message, out: list[Output]
    ) -> tuple[list[Output], Message | None]:
        if isinstance(message, SwimPing):
            self._apply_all(now, message.updates)
            reply = self._reply_address(now) if message.target == self.node_id else None
            if reply is not None:
                out.append(Send(reply, SwimAck(message.seq, self.node_id, self._piggyback())))
        elif isinstance(message, SwimAck):
            self._apply_all(now, message.updates)
            self._on_ack(message.seq, out)
        elif isinstance(message, SwimPingReq):
            self._apply_all(now, message.updates)
            target = self.members.get(message.target)
            origin = self._reply_address(now)
            if target is None or target.state not in (ALIVE, SUSPECT) or origin is None:
                # Not a member here: relaying (or even a nack) would let anyone make this node
                # dial anywhere. The prober misses one nack, as if this relay were slow.
                self._take_urgent(out)
                return out, None
            seq = self._next_seq()
            # The nack is due one probe_timeout after the ping-req, not stretched by this
            # node's own health score: the prober counts nacks until its failure_timeout, and
            # a stretched relay would make a healthy prober miss them and raise its score,
            # which stretches its own relaying in turn (memberlist does not scale it either).
            self._relays[seq] = Relay(origin, message.seq, now + self.config.probe_timeout)
            out.append(
                Send(
                    target.address,
                    SwimPing(seq, self.node_id, self.me.address, target.node_id, self._piggyback()),
                )
            )
        elif isinstance(message, SwimNack):
            probe = self._probe
            if probe is not None and probe.seq == message.seq:
                probe.nacks += 1
        elif isinstance(message, SwimGossip):
            self._apply_all(now, message.updates)
        elif isinstance(message, PushPull):
            self.merge_state(now, message.states)
            self._take_urgent(out)
            return out, PushPullReply(self.node_id, self.local_state())
        self._take_urgent(out)
        return out, None

    def merge_state(self, now: float, records: list[MemberRecord]) -> None:
        """Merge a peer's full member list from a push-pull.

        A peer's "dead" about a third member counts only as a suspicion here: this node
        makes its own decision, through its own suspicion timer. Called by the driver with
        the answer to a sync it asked for, it adds any number of members; inside
        :meth:`handle` (a sync asked of this node) the message's limit holds.
        """
        for record in records:
            if record.state == CODE[DEAD] and record.node_id != self.node_id:
                record = MemberRecord(
                    record.node_id,
                    record.address,
                    record.incarnation,
                    CODE[SUSPECT],
                    record.origin,
                )
            self.apply(now, record)

    def leave(self, now: float) -> list[Output]:
        """Announce a graceful leave; return the messages that carry it.

        Every live member is told directly: a node that left gossips no more, so when many
        leave at once (a whole fleet restarting) the ones told could all be leaving too, and
        a member that stays would go on counting this node until it found it dead, refusing
        meanwhile the partitions this node hands it (it does not replicate them in a view
        that counts this node), and afterwards all its data. Every member that left within
        ``LEFT_NOTICE_WINDOW`` is told too: it may still be handing its data over, and would
        otherwise keep offering it to this node.

        The notice carries the records of the members alive here that joined last: a member
        leaving at the same time learns nothing more once it left, and may not know yet of
        the newcomers that stay, to which it has to hand its data.
        """
        if self.left:
            return []
        self.me.incarnation += 1
        self.me.state = LEFT
        record = self.own_record()
        targets = [m for m in self.members.values() if m.state in (ALIVE, SUSPECT)]
        newest = sorted(
            (m for m in targets if m.state == ALIVE), key=lambda m: (-m.since, m.node_id)
        )[: max(0, self.config.max_piggyback - 1)]
        self.rng.shuffle(targets)
        leaving = [
            m
            for m in self.members.values()
            if m.state == LEFT and now - m.since <= LEFT_NOTICE_WINDOW
        ]
        records = [record, *(m.record(self.node_id) for m in newest)]
        message = SwimGossip(self.node_id, self.me.address, records)
        out: list[Output] = [Send(m.address, message) for m in targets + leaving]
        self.left = True
        return out

    # -- the rules -----------------------------------------------------------------------

    def apply(self, now: float, record: MemberRecord) -> bool:
        """Apply one gossiped record by SWIM's incarnation rules; return whether it changed."""
        if record.incarnation > self._wall_origin + int(now * 1000) + INCARNATION_MARGIN:
            self.refused_records += 1
            return False
        state = STATE[record.state]
        if record.node_id == self.node_id:
            return self._about_me(now, record, state)
        m = self.members.get(record.node_id)
        if self.proofs is not None and not self._proven(record, state, m):
            self.refused_records += 1
            return False
        if m is None:
            if self._new_allowed is not None:
                if self._new_allowed <= 0:
                    self.refused_records += 1
                    return False
                self._new_allowed -= 1
            m = Member(record.node_id, record.address, record.incarnation, state, now, record.proof)
            self.members[m.node_id] = m
            self.changes.append(Change(m, None, state))
            if state in (ALIVE, SUSPECT):
                self._others_live += 1
                self._had_peers = True
            if state == SUSPECT:
                self._suspicions[m.node_id] = Suspicion(now, m.incarnation, {record.origin})
                self._count_suspicion(record)
            self._enqueue(record)
            return True
        inc = record.incarnation
        if state == ALIVE:
            if inc > m.incarnation:
                self._set(now, m, ALIVE, inc, record.address)
                m.proof = record.proof
                self._enqueue(record)
                return True
            return False
        if state == SUSPECT:
            if (m.state == ALIVE and inc >= m.incarnation) or (
                m.state in (DEAD, LEFT) and inc > m.incarnation
            ):
                # An accusation moves no address where the member's own word is required.
                address = m.address if self.proofs is not None else record.address
                self._set(now, m, SUSPECT, inc, address)
                self._suspicions[m.node_id] = Suspicion(now, inc, {record.origin})
                self._count_suspicion(record)
                self._enqueue(record)
                self._tell_suspect(m, record)
                if record.origin != self.node_id:
                    self._probe_soon = m.node_id
                return True
            if m.state == SUSPECT:
                if inc > m.incarnation:
                    m.incarnation = inc
                    self._suspicions[m.node_id] = Suspicion(now, inc, {record.origin})
                    self._count_suspicion(record)
                    self._enqueue(record)
                    return True
                suspicion = self._suspicions.get(m.node_id)
                if (
                    inc == m.incarnation
                    and suspicion is not None
                    and record.origin not in suspicion.confirmers
                ):
                    suspicion.confirmers.add(record.origin)
                    self._enqueue(record)
                    return True
            return False
        # dead or left
        if m.state == LEFT or (m.state == DEAD and state == DEAD):
            return False
        if inc >= m.incarnation:
            self._set(now, m, state, inc, m.address)
            if state == LEFT:
                m.proof = record.proof
            self._enqueue(record)
            return True
        return False

    def _proven(self, record: MemberRecord, state: MemberState, m: Member | None) -> bool:
        """Whether a record about another member may be taken, with authentication on.

        Alive and left (the member's own word: its address, incarnation and key) need the
        member's signed proof. Suspect and dead are accusations by others: taken only about
        a member this node knows, at an incarnation the member itself claimed (so nobody
        can declare a member dead at an incarnation it can never refute).
        """
        proofs = self.proofs
        assert proofs is not None
        if state in (ALIVE, LEFT):
            return proofs.check(record)
        return m is not None and record.incarnation <= m.incarnation

    def _count_suspicion(self, record: MemberRecord) -> None:
        if record.origin == self.node_id:
            self.suspicions_raised += 1
        else:
            self.suspicions_heard += 1

    def _tell_suspect(self, m: Member, record: MemberRecord) -> None:
        """Pass a suspicion heard from others straight to the suspect (Lifeguard, widened).

        The suspect answers with its refutation to whoever told it. A node that learns of a
        suspicion late (it was paused, or the refutation's gossip missed it) is corrected
        within a round trip instead of waiting for gossip. In large clusters only a sample
        of the members does it (about 32), to spare the suspect a burst.
        """
        if record.origin == self.node_id:
            return
        if self.rng.random() < min(1.0, 32 / self.size()):
            self._urgent.append(
                Send(m.address, SwimGossip(self.node_id, self.me.address, [record]))
            )

    def _about_me(self, now: float, record: MemberRecord, state: MemberState) -> bool:
        if state == ALIVE and record.incarnation <= self.me.incarnation:
            return False
        if state != ALIVE and record.incarnation < self.me.incarnation:
            # A stale accusation: this node refuted it already, but the sender missed that.
            addr = self._reply_address(now)
            if addr is not None and self._may_tell(now, addr):
                alive = self.own_record()
                self._urgent.append(Send(addr, SwimGossip(self.node_id, self.me.address, [alive])))
            return False
        # Someone holds an equal or newer claim that we are suspect, dead or gone (or a
        # record of a previous life): refute by outranking it, at once, to the accuser and to
        # a few random members, besides the usual piggybacking.
        self.me.incarnation = record.incarnation + 1
        self.refutations += 1
        if state in (SUSPECT, DEAD):
            self._raise_awareness(1)
        alive = self.own_record()
        self._enqueue(alive)
        message = SwimGossip(self.node_id, self.me.address, [alive])
        targets = [m for m in self.members.values() if m.state in (ALIVE, SUSPECT)]
        chosen = self.rng.sample(targets, min(self.config.gossip_fanout, len(targets)))
        addresses = {m.address for m in chosen}
        accuser = self.members.get(record.origin)
        if accuser is not None:
            addresses.add(accuser.address)
        sender_addr = self._reply_address(now) if self._sender is not None else None
        if sender_addr is not None:
            addresses.add(sender_addr)
        self._urgent.extend(Send(addr, message) for addr in sorted(addresses))
        return True

    def _set(
        self, now: float, m: Member, state: MemberState, incarnation: int, address: str
    ) -> None:
        old = m.state
        m.incarnation = incarnation
        m.address = address
        if state != SUSPECT:
            self._suspicions.pop(m.node_id, None)
        if old != state:
            m.state = state
            m.since = now
            self.changes.append(Change(m, old, state))
            self._others_live += (state in (ALIVE, SUSPECT)) - (old in (ALIVE, SUSPECT))
            self._had_peers = self._had_peers or state in (ALIVE, SUSPECT)

    def _apply_all(self, now: float, records: list[MemberRecord]) -> None:
        for record in records:
            self.apply(now, record)

    # -- probing -------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _next_target(self) -> Member | None:
        soon, self._probe_soon = self._probe_soon, None
        if soon is not None:
            m = self.members.get(soon)
            if m is not None and m.state == SUSPECT:
                return m
        for _ in range(2):
            while self._order_pos < len(self._order):
                node_id = self._order[self._order_pos]
                self._order_pos += 1
                m = self.members.get(node_id)
                if m is not None and m.state in (ALIVE, SUSPECT):
                    return m
            self._order = [m.node_id for m in self.members.values() if m.state in (ALIVE, SUSPECT)]
            self.rng.shuffle(self._order)
            self._order_pos = 0
            if not self._order:
                return None
        return None

    def _tick_probe(self, now: float, out: list[Output]) -> None:
        probe = self._probe
        cfg = self.config
        if probe is not None:
            if not probe.indirect and now >= probe.direct_deadline:
                probe.indirect = True
                target = self.members.get(probe.target)
                helpers = [
                    m
                    for m in self.members.values()
                    if m.state == ALIVE and m.node_id != probe.target
                ]
                if target is not None and helpers:
                    chosen = self.rng.sample(helpers, min(cfg.indirect_checks, len(helpers)))
                    probe.expected_nacks = len(chosen)
                    for helper in chosen:
                        out.append(
                            Send(
                                helper.address,
                                SwimPingReq(
                                    probe.seq,
                                    self.node_id,
                                    self.me.address,
                                    target.node_id,
                                    target.address,
                                    self._piggyback(),
                                ),
                            )
                        )
            if probe.indirect and now >= probe.final_deadline:
                self._probe = None
                self._probe_failed(now, probe, out)
        if self._probe is None and now >= self._next_probe:
            target = self._next_target()
            self._next_probe = now + self.scaled(cfg.probe_interval)
            if target is None:
                return
            seq = self._next_seq()
            first: list[MemberRecord] = []
            if target.state == SUSPECT:
                first.append(target.record(self.node_id))  # tell the suspect first
            self.probes += 1
            self._probe = Probe(
                target.node_id,
                seq,
                now + self.scaled(cfg.probe_timeout),
                now + self.scaled(cfg.failure_timeout),
            )
            out.append(
                Send(
                    target.address,
                    SwimPing(
                        seq,
                        self.node_id,
                        self.me.address,
                        target.node_id,
                        first + self._piggyback(len(first)),
                    ),
                )
            )

    def _probe_failed(self, now: float, probe: Probe, out: list[Output]) -> None:
        # As memberlist does: the score rises by the nacks that did not come (the relays could
        # not answer us, so the trouble may be ours), or by 1 when no relay was asked. When
        # every relay sent its nack, they reached us and not the target: the target is the
        # problem, and this node's own timing is not stretched, so a dead member is detected
        # at full speed.
        self.probes_failed += 1
        if probe.expected_nacks:
            self._raise_awareness(max(0, probe.expected_nacks - probe.nacks))
        else:
            self._raise_awareness(1)
        m = self.members.get(probe.target)
        if m is None or m.state not in (ALIVE, SUSPECT):
            return
        # A new suspicion, or this node's independent confirmation of one others started
        # (Lifeguard: each confirmation shortens the suspicion).
        record = MemberRecord(m.node_id, m.address, m.incarnation, CODE[SUSPECT], self.node_id)
        self.apply(now, record)
        # Lifeguard: tell the suspected member first, so that it can refute at once.
        out.append(Send(m.address, SwimGossip(self.node_id, self.me.address, [record])))

    def _on_ack(self, seq: int, out: list[Output]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self._probe = None
            self.probes_acked += 1
            self.awareness = max(0, self.awareness - 1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            out.append(Send(relay.origin_addr, SwimAck(relay.origin_seq, self.node_id, [])))

    def _tick_relays(self, now: float, out: list[Output]) -> None:
        for seq in [s for s, r in self._relays.items() if now >= r.deadline]:
            relay = self._relays.pop(seq)
            out.append(Send(relay.origin_addr, SwimNack(relay.origin_seq, self.node_id)))

    def _tick_suspicions(self, now: float) -> None:
        for node_id, s in list(self._suspicions.items()):
            if now < s.start + self.suspicion_timeout(len(s.confirmers)):
                continue
            del self._suspicions[node_id]
            m = self.members.get(node_id)
            if m is not None and m.state == SUSPECT and m.incarnation == s.incarnation:
                self.apply(
                    now,
                    MemberRecord(node_id, m.address, m.incarnation, CODE[DEAD], self.node_id),
                )

    def _raise_awareness(self, delta: int) -> None:
        self.awareness = min(self.config.awareness_max, self.awareness + delta)

    def _forget_old_dead(self, now: float) -> None:
        horizon = now - self.config.dead_retention
        if now < self._next_prune:
            return
        self._next_prune = now + self.config.probe_interval * 100
        for node_id in [
            n for n, m in self.members.items() if m.state in (DEAD, LEFT) and m.since < horizon
        ]:
            del self.members[node_id]

    # -- dissemination -------------------------------------------------------------------

    def _enqueue(self, record: MemberRecord) -> None:
        self.updates.add(record)

    def _piggyback(self, used: int = 0) -> list[MemberRecord]:
        """The updates a message carries, besides ``used`` records it carries already."""
        return self.updates.take(self.config.max_piggyback - used, self.retransmit_limit())

    def _gossip(self, out: list[Output]) -> None:
        targets = [m for m in self.members.values() if m.state in (ALIVE, SUSPECT)]
        if not targets:
            return
        for m in self.rng.sample(targets, min(self.config.gossip_fanout, len(targets))):
            updates = self._piggyback()
            if not updates:
                break
            out.append(Send(m.address, SwimGossip(self.node_id, self.me.address, updates)))

    def _sync(self, out: list[Output], *, live: bool) -> None:
        """A full state sync with a random live member, or with a random member held dead.

        The second is how the two sides of a healed partition find each other again.
        """
        states = (ALIVE, SUSPECT) if live else (DEAD,)
        candidates = [m for m in self.members.values() if m.state in states]
        if candidates:
            message = PushPull(self.node_id, self.me.address, False, self.local_state())
            out.append(Sync(self.rng.choice(candidates).address, message))
