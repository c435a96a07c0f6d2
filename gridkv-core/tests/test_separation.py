"""SeparationWatch, loop-free: who drops after a long separation, and whose old data is held."""

from __future__ import annotations

from gridkv.cluster.membership.separation import SeparationWatch

THRESHOLD = 10.0
MARGIN_MS = 500
START_MS = 1_000  # every member's incarnation: wall ms at its start
SPLIT_S = 5.0  # loop time of the last contact before the split
HEAL_S = SPLIT_S + THRESHOLD + 5  # loop time of the first contact after it


def ms(seconds: float) -> int:
    """Wall milliseconds at a loop time (the two clocks run together here)."""
    return START_MS + int(seconds * 1000)


def watch(me: str, members: list[str]) -> SeparationWatch:
    w = SeparationWatch(me, threshold=THRESHOLD, window=5.0, margin_ms=MARGIN_MS)
    for member in members:
        w.heard(member, 0.0, ms(0))
    assert w.decide(0.0, live(me, *members)) is None  # all in the view: none heard first now
    return w


def split(w: SeparationWatch, same_side: list[str], other_side: list[str]) -> None:
    """Everybody talks until SPLIT_S; then only ``same_side`` until HEAL_S."""
    for member in same_side + other_side:
        w.heard(member, SPLIT_S, ms(SPLIT_S))
    w.heard(w.me, 0.0, 0)  # a node never holds itself
    at = SPLIT_S
    while at < HEAL_S - 1:
        at += 1
        for member in same_side:
            assert not w.heard(member, at, ms(at))


def live(*members: str, incarnation: int = START_MS) -> dict[str, int]:
    return dict.fromkeys(members, incarnation)


OLD = ms(SPLIT_S - 1)  # written before the split
NEW = ms(HEAL_S - 2)  # written during it


def test_the_larger_side_holds_a_returning_member_until_it_shows_it_dropped() -> None:
    w = watch("a", ["b", "c", "d"])
    split(w, ["b"], ["c", "d"])
    assert w.heard("c", HEAL_S, ms(HEAL_S))
    assert w.decide(HEAL_S, live("a", "b", "c")) is None  # "a" keeps; "c" drops
    assert w.holding() == ["c"]
    assert w.floor("c", START_MS, HEAL_S) > OLD
    assert w.floor("c", START_MS, HEAL_S) <= NEW
    # A refutation raises the incarnation by one: not a drop.
    assert w.floor("c", START_MS + 1, HEAL_S) > OLD
    # "c" dropped: its incarnation moved past the last contact, as a restart's would. What it
    # read before may still be on its way: the hold ends a margin later.
    dropped = ms(HEAL_S + 1)
    assert w.floor("c", dropped, HEAL_S + 1) > OLD
    assert w.floor("c", dropped, HEAL_S + 1 + MARGIN_MS / 1000) > OLD
    assert w.floor("c", dropped, HEAL_S + 1.6) == 0
    assert w.holding() == []
    assert w.floor("c", START_MS, HEAL_S + 2) == 0  # the hold does not come back


def test_data_arriving_before_any_membership_message_holds_its_sender() -> None:
    w = watch("a", ["b", "c"])
    split(w, ["b"], ["c"])
    # Gossip told "a" that "c" is alive again; its handoff batch comes first.
    assert w.floor("c", START_MS, HEAL_S) > OLD
    assert w.holding() == ["c"]
    assert w.floor("c", START_MS, HEAL_S) <= NEW
    # A member heard within the threshold is not held; nor one that restarted since.
    assert w.floor("b", START_MS, HEAL_S) == 0
    w2 = watch("a", ["c"])
    split(w2, [], ["c"])
    assert w2.floor("c", ms(HEAL_S), HEAL_S) > OLD  # in flight from before the restart
    assert w2.floor("c", ms(HEAL_S), HEAL_S + 1) == 0


def test_the_side_that_drops_takes_the_other_sides_data_and_holds_its_own_side() -> None:
    w = watch("d", ["a", "b", "c", "e"])
    split(w, ["e"], ["a", "b", "c"])
    everyone = live("a", "b", "c", "d", "e")
    w.heard("a", HEAL_S, ms(HEAL_S))
    assert w.decide(HEAL_S, everyone) is None  # one against two: not yet
    assert w.floor("a", START_MS, HEAL_S) > OLD  # held meanwhile
    w.heard("b", HEAL_S + 0.1, ms(HEAL_S + 0.1))
    w.heard("c", HEAL_S + 0.2, ms(HEAL_S + 0.2))
    drop_before = w.decide(HEAL_S + 0.2, everyone)
    assert drop_before == ms(SPLIT_S) + MARGIN_MS
    # What the other side held is what this node keeps now; "e" has yet to drop.
    assert w.holding() == ["e"]
    assert w.floor("a", START_MS, HEAL_S + 0.3) == 0
    assert w.floor("e", START_MS, HEAL_S + 0.3) > OLD
    assert w.floor("e", START_MS, HEAL_S + 0.3) <= NEW
    assert w.floor("e", ms(HEAL_S + 1), HEAL_S + 1) > OLD  # "e" dropped too: a margin more
    assert w.floor("e", ms(HEAL_S + 1), HEAL_S + 2) == 0
    # A member of the other side first heard after the drop is not held.
    w.heard("f", 0.0, ms(0))
    w.decide(0.0, {**everyone, "f": START_MS})
    w.heard("f", SPLIT_S, ms(SPLIT_S))
    w.heard("f", HEAL_S + 1, ms(HEAL_S + 1))
    assert w.holding() == []


def test_a_member_of_this_side_that_dropped_first_is_not_held() -> None:
    w = watch("d", ["a", "b", "c", "e"])
    split(w, ["e"], ["a", "b", "c"])
    for member in ("a", "b", "c"):
        w.heard(member, HEAL_S, ms(HEAL_S))
    # "e" dropped a moment ago (its incarnation is past the split): nothing to hold.
    assert w.decide(HEAL_S, {**live("a", "b", "c", "d"), "e": ms(HEAL_S - 0.5)}) is not None
    assert w.holding() == []


def test_forgetting_a_member_ends_its_hold() -> None:
    w = watch("a", ["b", "c"])
    split(w, ["b"], ["c"])
    w.heard("c", HEAL_S, ms(HEAL_S))
    assert w.holding() == ["c"]
    w.prune(HEAL_S + 100, keep=["a", "b"], horizon=50)
    assert w.holding() == []


def test_a_drop_ends_the_holds_on_the_other_side_even_those_not_yet_counted() -> None:
    w = watch("d", ["a", "b", "c", "e", "f"])
    split(w, ["e"], ["a", "b", "c", "f"])
    for i, member in enumerate(("a", "b", "c")):
        w.heard(member, HEAL_S + i / 10, ms(HEAL_S + i / 10))
    w.floor("f", START_MS, HEAL_S)  # data from "f" first: held, not yet counted back
    assert w.holding() == ["a", "b", "c", "f"]
    assert w.decide(HEAL_S + 0.3, live("a", "b", "c", "d", "e", "f")) is not None
    assert w.holding() == ["e"]
    assert w.floor("f", START_MS, HEAL_S + 0.4) == 0
    # "f" heard only now: its silence began before the drop, which resolved it.
    assert w.heard("f", HEAL_S + 0.5, ms(HEAL_S + 0.5))  # a long silence ended, and
    assert w.holding() == ["e"]  # is not held


def test_a_hold_ends_after_hold_max_whatever_the_member_does() -> None:
    w = SeparationWatch("a", threshold=THRESHOLD, window=5.0, margin_ms=MARGIN_MS, hold_max=30)
    for member in ("b", "c"):
        w.heard(member, 0.0, ms(0))
    w.decide(0.0, live("a", "b", "c"))
    split(w, ["b"], ["c"])
    w.heard("c", HEAL_S, ms(HEAL_S))
    assert w.floor("c", START_MS, HEAL_S + 29) > OLD
    assert w.floor("c", START_MS, HEAL_S + 31) == 0
    assert w.holding() == []
