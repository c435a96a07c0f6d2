"""The SWIM state machine alone: messages and time in, messages out (no I/O)."""

from __future__ import annotations

import random

import pytest
from gridkv.cluster.membership.swim import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Output,
    Send,
    Swim,
    SwimConfig,
    Sync,
)
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

CFG = SwimConfig(
    probe_interval=1.0,
    probe_timeout=0.2,
    failure_timeout=0.5,
    suspicion_min=1.0,
    suspicion_max_mult=3.0,
    indirect_checks=2,
    push_pull_interval=1000.0,
)
CODE: dict[str, int] = {ALIVE: 0, SUSPECT: 1, DEAD: 2, LEFT: 3}


def machine(node_id: str, inc: int = 1, now: float = 0.0, cfg: SwimConfig = CFG) -> Swim:
    return Swim(node_id, f"{node_id}:1", inc, cfg, random.Random(node_id), now)


def rec(node_id: str, inc: int, state: str, origin: str = "x") -> MemberRecord:
    return MemberRecord(node_id, f"{node_id}:1", inc, CODE[state], origin)


def with_members(swim: Swim, *ids: str, now: float = 0.0) -> Swim:
    for node_id in ids:
        swim.apply(now, rec(node_id, 1, ALIVE))
    swim.changes.clear()
    return swim


def run_ticks(swim: Swim, start: float, end: float, step: float = 0.05) -> list[Output]:
    """Tick regularly from ``start`` to ``end`` (a gap would read as the node being stalled)."""
    out: list[Output] = []
    t = start
    while t < end:
        out += swim.tick(t)
        t = min(end, t + step)
    out += swim.tick(end)
    return out


def sends(outputs: list[Output], kind: type[Message]) -> list[Send]:
    return [o for o in outputs if isinstance(o, Send) and isinstance(o.message, kind)]


class Net:
    """Delivers one machine's sends to the others, instantly, like aioquic's test pairs."""

    def __init__(self, *machines: Swim) -> None:
        self.by_addr = {m.me.address: m for m in machines}
        self.down: set[str] = set()

    def run(self, outputs: list[Output], now: float) -> None:
        queue = list(outputs)
        while queue:
            out = queue.pop(0)
            if isinstance(out, Sync):
                target = self.by_addr.get(out.address)
                continue
            target = self.by_addr.get(out.address)
            if target is None or out.address in self.down:
                continue
            more, _ = target.handle(now, out.message)
            queue.extend(more)

    def tick_all(self, now: float) -> None:
        for addr, m in self.by_addr.items():
            if addr not in self.down:
                self.run(m.tick(now), now)


def test_a_probe_is_acked_and_lowers_the_health_score() -> None:
    a, b = machine("a"), machine("b")
    with_members(a, "b")
    with_members(b, "a")
    a.awareness = 2
    net = Net(a, b)
    out = a.tick(0.0)
    pings = sends(out, SwimPing)
    assert len(pings) == 1
    assert pings[0].message.target == "b"  # type: ignore[attr-defined]
    net.run(out, 0.0)
    assert a.awareness == 1
    assert a.state_of("b") == ALIVE


def test_no_direct_ack_asks_others_then_suspects_the_target() -> None:
    a = with_members(machine("a"), "b", "c", "d")
    a._order = ["b", "c", "d"]
    a._order_pos = 0
    out = a.tick(0.0)
    assert sends(out, SwimPing)[0].address == "b:1"
    assert sends(a.tick(0.1), SwimPingReq) == []
    reqs = sends(a.tick(0.2), SwimPingReq)
    assert sorted(r.address for r in reqs) == ["c:1", "d:1"]
    assert all(r.message.target == "b" for r in reqs)  # type: ignore[attr-defined]
    a.tick(0.5)
    assert a.state_of("b") == SUSPECT
    # two relays asked, neither nack came back
    assert a.awareness == 2


def test_nacks_spare_the_prober_a_missed_nack_penalty() -> None:
    a = with_members(machine("a"), "b", "c", "d")
    a._order = ["b", "c", "d"]
    a._order_pos = 0
    ping = sends(a.tick(0.0), SwimPing)[0]
    reqs = sends(a.tick(0.2), SwimPingReq)
    for r in reqs:
        a.handle(0.3, SwimNack(ping.message.seq, "c"))  # type: ignore[attr-defined]
        del r
    a.tick(0.5)
    assert a.state_of("b") == SUSPECT
    assert a.awareness == 0  # the relays answered: the target is the problem, not a


def test_a_relay_probes_for_the_requester_and_relays_the_ack() -> None:
    a, b, c = machine("a"), machine("b"), machine("c")
    for m, others in ((a, "bc"), (b, "ac"), (c, "ab")):
        with_members(m, *others)
    out, _ = b.handle(0.0, SwimPingReq(7, "a", "a:1", "c", "c:1", []))
    ping = sends(out, SwimPing)[0]
    assert ping.address == "c:1"
    out, _ = c.handle(0.0, ping.message)
    ack = sends(out, SwimAck)[0]
    assert ack.address == "b:1"
    out, _ = b.handle(0.0, ack.message)
    relayed = sends(out, SwimAck)[0]
    assert relayed.address == "a:1"
    assert relayed.message.seq == 7  # type: ignore[attr-defined]


def test_a_relay_that_gets_no_ack_sends_a_nack() -> None:
    b = with_members(machine("b"), "a", "c")
    b.handle(0.0, SwimPingReq(9, "a", "a:1", "c", "c:1", []))
    nacks = sends(run_ticks(b, 0.0, 1.0), SwimNack)
    assert [(n.address, n.message.seq) for n in nacks] == [("a:1", 9)]  # type: ignore[attr-defined]


def test_a_relay_nacks_within_the_probers_window_whatever_its_own_health() -> None:
    # A prober waits for nacks until failure_timeout; its ping-reqs go out at probe_timeout.
    # An unhealthy relay must not nack later than that, or a healthy prober would count the
    # nack as missed and raise its own score (a feedback loop across the cluster).
    b = with_members(machine("b"), "a", "c")
    b.awareness = CFG.awareness_max
    start = CFG.probe_timeout
    b.handle(start, SwimPingReq(9, "a", "a:1", "c", "c:1", []))
    window = CFG.failure_timeout - 0.01
    nacks = sends(run_ticks(b, start, window, step=0.01), SwimNack)
    assert [n.address for n in nacks] == ["a:1"]


def test_a_ping_for_another_node_id_is_not_answered() -> None:
    b = machine("b")
    out, _ = b.handle(0.0, SwimPing(1, "a", "a:1", "old-b", []))
    assert sends(out, SwimAck) == []


def test_a_message_from_an_unknown_member_starts_a_state_sync_with_it() -> None:
    b = machine("b")
    out, _ = b.handle(0.0, SwimPing(1, "a", "a:1", "b", []))
    assert [o.address for o in out if isinstance(o, Sync)] == ["a:1"]
    out, _ = b.handle(0.01, SwimPing(2, "a", "a:1", "b", []))
    assert [o for o in out if isinstance(o, Sync)] == []  # rate-limited


def test_a_suspected_member_refutes_with_a_higher_incarnation() -> None:
    b = machine("b", inc=5)
    b.handle(0.0, SwimGossip("a", "a:1", [rec("b", 5, SUSPECT, "a")]))
    assert b.me.incarnation == 6
    assert b.me.state == ALIVE
    assert b.awareness == 1
    a = with_members(machine("a"), "b")
    a.apply(0.0, rec("b", 5, SUSPECT, "a"))
    assert a.state_of("b") == SUSPECT
    a.handle(0.1, SwimGossip("b", "b:1", b._piggyback()))
    assert a.state_of("b") == ALIVE


def test_probes_of_a_suspect_carry_the_suspicion_first() -> None:
    a = with_members(machine("a"), "b")
    a.apply(0.0, MemberRecord("b", "b:1", 1, CODE[SUSPECT], "a"))
    ping = sends(a.tick(0.0), SwimPing)[0]
    first = ping.message.updates[0]  # type: ignore[attr-defined]
    assert (first.node_id, first.state) == ("b", CODE[SUSPECT])


@pytest.mark.parametrize(
    ("known", "incoming", "expected"),
    [
        ((1, ALIVE), (1, SUSPECT), SUSPECT),
        ((2, ALIVE), (1, SUSPECT), ALIVE),
        ((1, SUSPECT), (1, ALIVE), SUSPECT),
        ((1, SUSPECT), (2, ALIVE), ALIVE),
        ((1, SUSPECT), (1, DEAD), DEAD),
        ((1, ALIVE), (1, DEAD), DEAD),
        ((2, ALIVE), (1, DEAD), ALIVE),
        ((3, DEAD), (3, ALIVE), DEAD),
        ((3, DEAD), (2, ALIVE), DEAD),
        ((3, DEAD), (4, ALIVE), ALIVE),
        ((3, DEAD), (3, SUSPECT), DEAD),
        ((1, ALIVE), (1, LEFT), LEFT),
        ((1, LEFT), (1, ALIVE), LEFT),
        ((1, LEFT), (2, ALIVE), ALIVE),
    ],
)
def test_incarnation_rules(
    known: tuple[int, str], incoming: tuple[int, str], expected: str
) -> None:
    a = machine("a")
    a.apply(0.0, rec("b", known[0], ALIVE))
    if known[1] != ALIVE:
        a.apply(0.0, rec("b", known[0], known[1]))
    a.apply(1.0, rec("b", *incoming))
    assert a.state_of("b") == expected


def test_stale_gossip_never_resurrects_a_dead_member() -> None:
    a = with_members(machine("a"), "b")
    a.apply(0.0, rec("b", 1, DEAD))
    for _ in range(10):
        a.handle(1.0, SwimGossip("c", "c:1", [rec("b", 1, ALIVE, "c")]))
    a.merge_state(2.0, [rec("b", 1, ALIVE, "c")])
    assert a.state_of("b") == DEAD


def test_a_suspicion_not_refuted_in_time_makes_the_member_dead() -> None:
    a = with_members(machine("a"), *"bcdefg")
    a.apply(0.0, rec("b", 1, SUSPECT, "c"))
    # a's own probe of b fails too and confirms the suspicion, which shortens it.
    shortest = a.suspicion_timeout(2)
    run_ticks(a, 0.0, shortest - 0.01)
    assert a.state_of("b") == SUSPECT
    run_ticks(a, shortest - 0.01, a.suspicion_timeout(1) + 0.01)
    assert a.state_of("b") == DEAD


def test_a_heard_suspicion_is_probed_next_and_confirmed_by_a_failed_probe() -> None:
    a = with_members(machine("a"), *"bcdefg")
    a.apply(0.0, rec("b", 1, SUSPECT, "c"))
    first = run_ticks(a, 0.0, 0.01)
    assert [p.address for p in sends(first, SwimPing)] == ["b:1"]  # out of round-robin turn
    run_ticks(a, 0.01, CFG.failure_timeout + 0.06)
    assert a.state_of("b") == SUSPECT
    assert a._suspicions["b"].confirmers == {"c", "a"}


def test_independent_confirmations_shorten_the_suspicion() -> None:
    a = with_members(machine("a"), *"bcdefg")
    lone = a.suspicion_timeout(1)
    assert a.suspicion_timeout(2) < lone
    assert a.suspicion_timeout(4) == pytest.approx(CFG.suspicion_min)
    assert lone == pytest.approx(CFG.suspicion_max_mult * CFG.suspicion_min)
    a.apply(0.0, rec("b", 1, SUSPECT, "c"))
    for origin in "def":
        a.apply(0.1, rec("b", 1, SUSPECT, origin))
    run_ticks(a, 0.0, CFG.suspicion_min + 0.01)
    assert a.state_of("b") == DEAD


def test_suspicion_minimum_grows_with_log_of_the_cluster_size() -> None:
    small = with_members(machine("a"), *[f"m{i}" for i in range(9)])
    large = with_members(machine("a"), *[f"m{i}" for i in range(999)])
    assert large.suspicion_timeout(10) == pytest.approx(3 * small.suspicion_timeout(10))


def test_retransmit_limit_grows_with_log_n() -> None:
    small = with_members(machine("a"), *[f"m{i}" for i in range(9)])
    large = with_members(machine("a"), *[f"m{i}" for i in range(999)])
    assert small.retransmit_limit() == CFG.retransmit_mult * 2
    assert large.retransmit_limit() == CFG.retransmit_mult * 4


def test_each_update_is_sent_at_most_the_retransmit_limit() -> None:
    a = with_members(machine("a"), "b", "c")
    a.apply(0.0, rec("d", 1, ALIVE))
    limit = a.retransmit_limit()
    carried = 0
    for _ in range(limit + 5):
        carried += sum(1 for r in a._piggyback() if r.node_id == "d")
    assert carried == limit


def test_local_health_stretches_the_probe_period() -> None:
    def probes_in(awareness: int, seconds: float) -> int:
        a = with_members(machine("a"), "b", "c")
        a.awareness = awareness
        count = 0
        t = 0.0
        while t < seconds:
            for ping in sends(a.tick(t), SwimPing):
                count += 1
                a.handle(t, SwimAck(ping.message.seq, "x", []))  # type: ignore[attr-defined]
                a.awareness = awareness  # keep the score fixed for the comparison
            t += 0.05
        return count

    assert probes_in(0, 20.0) == pytest.approx(20, abs=1)
    assert probes_in(3, 20.0) == pytest.approx(5, abs=1)


def test_round_robin_probes_every_member_once_per_pass() -> None:
    a = with_members(machine("a"), *"bcdef")
    targets = []
    for i in range(10):
        ping = sends(a.tick(i * CFG.probe_interval), SwimPing)[0]
        targets.append(ping.message.target)  # type: ignore[attr-defined]
        a.handle(i * CFG.probe_interval, SwimAck(ping.message.seq, "x", []))  # type: ignore[attr-defined]
    assert sorted(targets[:5]) == list("bcdef")
    assert sorted(targets[5:]) == list("bcdef")


def test_push_pull_answers_with_full_state_and_treats_remote_dead_as_suspect() -> None:
    a = with_members(machine("a"), "b", "c")
    _, answer = a.handle(
        0.0, PushPull("z", "z:1", True, [rec("z", 1, ALIVE, "z"), rec("b", 1, DEAD, "z")])
    )
    assert isinstance(answer, PushPullReply)
    assert {r.node_id for r in answer.states} == {"a", "b", "c", "z"}
    assert a.state_of("z") == ALIVE
    assert a.state_of("b") == SUSPECT


def test_seeing_itself_dead_in_a_sync_makes_a_node_refute() -> None:
    b = machine("b", inc=4)
    b.merge_state(0.0, [rec("b", 4, DEAD, "a")])
    assert b.me.incarnation == 5
    assert b.me.state == ALIVE


def test_a_restarted_node_outranks_its_previous_life() -> None:
    a = with_members(machine("a"), "b")
    a.apply(0.0, rec("b", 1, DEAD))
    reborn = machine("b", inc=1000)
    _, answer = a.handle(1.0, reborn.join_message())
    assert a.state_of("b") == ALIVE
    assert isinstance(answer, PushPullReply)  # the joiner gets the full state, itself alive
    assert [(r.node_id, r.incarnation, r.state) for r in answer.states] == [
        ("a", 1, CODE[ALIVE]),
        ("b", 1000, CODE[ALIVE]),
    ]


def test_leave_announces_left_and_stops() -> None:
    a = with_members(machine("a"), "b", "c")
    out = a.leave(0.0)
    gossip = sends(out, SwimGossip)
    assert {g.address for g in gossip} == {"b:1", "c:1"}
    b = with_members(machine("b"), "a")
    b.handle(0.0, gossip[0].message)
    assert b.state_of("a") == LEFT
    assert a.tick(10.0) == []


def test_leave_tells_every_live_member_and_names_the_newest() -> None:
    # Many members leaving at once gossip no more: each live member has to hear it directly,
    # and a member leaving too learns from the notice who joined last (it may stay).
    ids = [f"m{i}" for i in range(12)]
    a = with_members(machine("a"), *ids)
    a.apply(5.0, rec("late", 1, ALIVE))
    out = a.leave(6.0)
    gossip = sends(out, SwimGossip)
    assert {g.address for g in gossip} == {f"{n}:1" for n in [*ids, "late"]}
    notice = gossip[0].message
    assert isinstance(notice, SwimGossip)
    records = notice.updates
    assert (records[0].node_id, records[0].state) == ("a", CODE[LEFT])
    assert records[1].node_id == "late"
    assert len(records) <= CFG.max_piggyback
    leaver = with_members(machine("m0"), "a")
    leaver.leave(6.0)
    leaver.handle(6.0, notice)
    assert leaver.state_of("a") == LEFT
    assert leaver.state_of("late") == ALIVE


def test_a_member_that_left_tells_whoever_still_probes_it() -> None:
    a = with_members(machine("a"), "b")
    a.leave(0.0)
    b = with_members(machine("b"), "a")
    out, answer = a.handle(1.0, SwimPing(7, "b", "b:1", "a", []))
    assert answer is None
    (notice,) = sends(out, SwimGossip)
    assert notice.address == "b:1"
    b.handle(1.0, notice.message)
    assert b.state_of("a") == LEFT
    # Not at each message: once a probe period at most.
    out, _ = a.handle(1.1, SwimPing(8, "b", "b:1", "a", []))
    assert sends(out, SwimGossip) == []


def test_periodic_sync_targets_a_live_and_a_failed_member() -> None:
    cfg = SwimConfig(push_pull_interval=1.0)
    a = with_members(machine("a", cfg=cfg), "b", "c")
    a.apply(0.0, rec("c", 1, DEAD))
    syncs = [o for o in a.tick(5.0) if isinstance(o, Sync)]
    assert sorted(s.address for s in syncs) == ["b:1", "c:1"]


def test_two_machines_detect_a_dead_third_through_time_alone() -> None:
    a, b, c = machine("a"), machine("b"), machine("c")
    for m, others in ((a, "bc"), (b, "ac"), (c, "ab")):
        with_members(m, *others)
    net = Net(a, b, c)
    net.down.add("c:1")
    t = 0.0
    while t < 30 and not (a.state_of("c") == DEAD and b.state_of("c") == DEAD):
        net.tick_all(t)
        t += 0.05
    assert a.state_of("c") == DEAD
    assert b.state_of("c") == DEAD
    assert a.state_of("b") == ALIVE
    assert b.state_of("a") == ALIVE


def test_a_node_that_was_paused_does_not_blame_others_for_it() -> None:
    a = with_members(machine("a"), "b", "c", "d")
    ping = sends(a.tick(0.0), SwimPing)[0]
    # the process stops for 2 s; the ack arrived meanwhile but is still unread
    a.tick(2.0)
    assert a.state_of(ping.message.target) == ALIVE  # type: ignore[attr-defined]
    a.handle(2.0, SwimAck(ping.message.seq, "x", []))  # type: ignore[attr-defined]
    a.tick(2.05)
    assert a.state_of(ping.message.target) == ALIVE  # type: ignore[attr-defined]
    assert all(a.state_of(x) == ALIVE for x in "bcd")


def test_a_suspicion_heard_from_others_is_passed_to_the_suspect() -> None:
    a = with_members(machine("a"), "b", "c")
    out, _ = a.handle(0.0, SwimGossip("c", "c:1", [rec("b", 1, SUSPECT, "c")]))
    told = sends(out, SwimGossip)
    assert [t.address for t in told] == ["b:1"]


def test_a_stale_accusation_gets_the_refutation_sent_back() -> None:
    b = machine("b", inc=5)
    out, _ = b.handle(0.0, SwimGossip("a", "a:1", [rec("b", 4, SUSPECT, "z")]))
    back = sends(out, SwimGossip)
    assert [x.address for x in back] == ["a:1"]
    record = back[0].message.updates[0]  # type: ignore[attr-defined]
    assert (record.node_id, record.state, record.incarnation) == ("b", 0, 5)


def test_the_refutation_goes_to_the_accuser_and_the_messenger() -> None:
    b = with_members(machine("b", inc=5), "a", "c", "d", "e")
    out, _ = b.handle(0.0, SwimGossip("c", "c:1", [rec("b", 5, SUSPECT, "a")]))
    gossip = sends(out, SwimGossip)
    assert {"a:1", "c:1"} <= {x.address for x in gossip}  # and a random gossip target or two
    for x in gossip:
        assert isinstance(x.message, SwimGossip)
        assert [(r.node_id, r.incarnation, r.state) for r in x.message.updates] == [
            ("b", 6, CODE[ALIVE])
        ]


# -- limits against buggy or hostile peers --------------------------------------------------


def test_an_accusation_at_the_largest_incarnation_is_ignored_and_refutation_never_overflows() -> (
    None
):
    from gridkv.cluster.membership.swim import INCARNATION_MARGIN

    start = 1_700_000_000_000  # incarnations start at wall-clock milliseconds
    me = with_members(machine("a", inc=start), "b")
    me.handle(0.0, SwimGossip("b", "b:1", [rec("a", 2**64 - 1, DEAD, "b")]))
    assert me.me.incarnation == start and me.me.state == ALIVE
    assert me.refused_records == 1
    # The largest accusation still accepted is refuted within 64 bits.
    highest = start + INCARNATION_MARGIN
    me.handle(0.0, SwimGossip("b", "b:1", [rec("a", highest, DEAD, "b")]))
    assert me.me.incarnation == highest + 1 < 2**64
    # Another member's record far ahead is ignored the same way.
    me.handle(0.0, SwimGossip("b", "b:1", [rec("b", 2**63, DEAD, "b")]))
    assert me.state_of("b") == ALIVE


def test_one_message_adds_only_a_few_members_this_node_did_not_know() -> None:
    from gridkv.cluster.membership.swim import NEW_MEMBERS_PER_MESSAGE

    me = with_members(machine("a"), "b")
    fakes = [rec(f"fake{i}", 1, ALIVE, f"fake{i}") for i in range(1000)]
    me.handle(0.0, PushPull("b", "b:1", False, fakes))
    assert len(me.members) == 1 + NEW_MEMBERS_PER_MESSAGE
    me.handle(0.0, SwimGossip("b", "b:1", fakes[100:120]))
    assert len(me.members) == 1 + 2 * NEW_MEMBERS_PER_MESSAGE
    # An answer to a sync this node asked for (a join) is not limited.
    joiner = machine("j")
    joiner.merge_state(0.0, fakes)
    assert len(joiner.members) == 1000


def test_a_ping_req_for_a_stranger_is_not_relayed_and_the_member_address_is_used() -> None:
    me = with_members(machine("a"), "b", "c")
    out, _ = me.handle(0.0, SwimPingReq(7, "b", "10.9.9.8:22", "stranger", "10.9.9.9:22", []))
    assert out == []  # no relay, and no nack to an address the message names
    out, _ = me.handle(0.0, SwimPingReq(8, "b", "10.9.9.8:22", "c", "10.9.9.9:22", []))
    pings = [o for o in out if isinstance(o, Send) and isinstance(o.message, SwimPing)]
    assert [p.address for p in pings] == ["c:1"]
    out = run_ticks(me, 0.0, 1.0)  # c never answers: the nack goes to b at b's own address
    nacks = [o for o in out if isinstance(o, Send) and isinstance(o.message, SwimNack)]
    assert [n.address for n in nacks] == ["b:1"]


def test_answers_go_to_a_members_own_address_and_to_claimed_ones_a_few_times_a_second() -> None:
    from gridkv.cluster.membership.swim import STRANGER_REPLIES

    me = with_members(machine("a"), "b")
    out, _ = me.handle(0.0, SwimPing(1, "b", "10.9.9.9:22", "a", []))
    assert [o.address for o in out if isinstance(o, Send)] == ["b:1"]
    acks: list[str] = []
    for i in range(1000):  # made-up senders naming a thousand addresses within one second
        out, _ = me.handle(0.5, SwimPing(i, f"x{i}", f"10.9.{i // 250}.{i % 250}:1", "a", []))
        acks.extend(o.address for o in out if isinstance(o, Send))
    assert len(acks) == STRANGER_REPLIES  # the bucket's tokens, and none refilled meanwhile


def test_a_node_without_live_members_tries_its_seeds_again() -> None:
    me = with_members(machine("a"), "b")
    me.seeds = ["seed:1"]
    me.apply(0.0, rec("b", 1, DEAD, "a"))
    out = run_ticks(me, 0.0, 3.5)
    syncs = [o for o in out if isinstance(o, Sync) and o.address == "seed:1"]
    assert len(syncs) == 3  # at about 1, 2 and 3 s: every reconnect_interval (1 s)
    assert all(s.message.join for s in syncs)
    fresh = machine("f")  # never had a peer: the driver's join does this, not the machine
    fresh.seeds = ["seed:1"]
    assert not [o for o in run_ticks(fresh, 0.0, 3.0) if isinstance(o, Sync)]
