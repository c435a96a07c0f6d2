"""The decisions made without I/O, tested without a loop: the anti-entropy diff, the handoff
plan and read repair."""

from __future__ import annotations

import pytest
from gridkv.cluster.antientropy.diff import diff_versions, differing, pages, ranges
from gridkv.cluster.handoff.plan import plan_gives
from gridkv.cluster.replication.repair import TokenBucket, freshest, stale_replicas
from gridkv.cluster.ring import PartitionTable
from gridkv.storage.base import BUCKETS, HASH_MAX, Entry, bucket_range
from gridkv.wire.budget import version_size

# -- anti-entropy ------------------------------------------------------------------------


def test_differing_names_the_buckets_whose_digests_differ() -> None:
    mine = [0] * BUCKETS
    theirs = [0] * BUCKETS
    theirs[3] = 7
    theirs[31] = 1
    assert differing(mine, theirs) == [3, 31]
    assert differing(mine, mine) == []
    with pytest.raises(ValueError, match="shorter"):  # different lengths are a bug, not a diff
        differing(mine, theirs[:-1])


def test_ranges_merge_adjacent_buckets_and_cover_exactly_them() -> None:
    assert ranges([]) == []
    assert ranges([0, 1, 2]) == [(0, bucket_range(2)[1])]
    assert ranges([5, 3]) == [bucket_range(3), bucket_range(5)]
    assert ranges(range(BUCKETS)) == [(0, HASH_MAX)]
    assert ranges([4, 4]) == [bucket_range(4)]


def test_pages_cover_the_range_in_hash_order_and_keep_equal_hashes_together() -> None:
    records = [(h, f"k{h}", 1, "w") for h in (10, 20, 20, 30, 40, 500)]
    budget = 2 * version_size("k10", "w")  # two records fill a page
    out = pages(records, 0, 100, budget)
    # No gaps, no overlap, within [0, 100], and record 500 (outside) left out.
    assert out[0][0] == 0
    assert out[-1][1] == 100
    for (_, high, _), (low, _, _) in zip(out, out[1:], strict=False):
        assert low == high + 1
    listed = [r for _, _, page in out for r in page]
    assert listed == sorted(r for r in records if r[0] <= 100)
    for low, high, page in out:
        assert all(low <= r[0] <= high for r in page)
    # The two records of hash 20 share a page even though the budget fills at the first.
    assert any([r[0] for r in page] == [10, 20, 20] for _, _, page in out)


def test_an_empty_range_is_one_empty_page() -> None:
    assert pages([(500, "k", 1, "w")], 0, 100, 1000) == [(0, 100, [])]


def test_diff_versions_gives_the_newer_and_asks_for_the_missing_and_newer() -> None:
    mine = [
        (1, "same", 5, "a"),
        (2, "mine-newer", 9, "a"),
        (3, "theirs-newer", 4, "a"),
        (4, "only-mine", 1, "a"),
        (5, "tie-writer-wins", 7, "b"),
    ]
    theirs = [
        ("same", 5, "a"),
        ("mine-newer", 8, "z"),
        ("theirs-newer", 4, "b"),
        ("only-theirs", 1, "a"),
        ("tie-writer-wins", 7, "a"),
    ]
    give, wanted = diff_versions(mine, theirs)
    assert give == ["mine-newer", "only-mine", "tie-writer-wins"]
    assert wanted == ["theirs-newer", "only-theirs"]


# -- handoff -----------------------------------------------------------------------------


def _table(*replicas: tuple[str, ...]) -> PartitionTable:
    return PartitionTable(len(replicas), max(len(r) for r in replicas), tuple(replicas))


def test_a_displaced_replica_gives_to_the_newcomers_and_stops() -> None:
    old = _table(("a", "b"), ("b", "c"))
    new = _table(("c", "b"), ("b", "c"))
    assert plan_gives(old, new, "a", {"a", "b", "c"}) == [(0, ["c"], True)]
    # b keeps partition 0 and a, which lost it, is alive: a gives, b does not.
    assert plan_gives(old, new, "b", {"a", "b", "c"}) == []


def test_when_the_leaver_is_dead_the_first_former_replica_still_alive_gives() -> None:
    old = _table(("a", "b", "c"))
    new = _table(("b", "c", "d"))
    assert plan_gives(old, new, "b", {"b", "c", "d"}) == [(0, ["d"], False)]
    assert plan_gives(old, new, "c", {"b", "c", "d"}) == []
    # With a alive, a gives and b stays quiet.
    assert plan_gives(old, new, "b", {"a", "b", "c", "d"}) == []
    assert plan_gives(old, new, "a", {"a", "b", "c", "d"}) == [(0, ["d"], True)]


def test_nothing_moves_without_newcomers() -> None:
    old = _table(("a", "b", "c"))
    new = _table(("a", "b"))  # c left: nobody new needs the data
    assert plan_gives(old, new, "a", {"a", "b"}) == []
    assert plan_gives(old, new, "c", {"a", "b", "c"}) == []


# -- read repair -------------------------------------------------------------------------


def _entry(version: int, writer: str = "w", value: bytes | None = b"v") -> Entry:
    return Entry("k", value, version, writer, 0)


def test_the_freshest_answer_wins_and_a_delete_beats_what_it_deleted() -> None:
    value, tombstone = _entry(5), _entry(6, value=None)
    assert freshest([None, value, tombstone, None]) is tombstone
    assert freshest([]) is None
    assert freshest([None, None]) is None
    assert freshest([_entry(5, "a"), _entry(5, "b")]) == _entry(5, "b")


def test_stale_replicas_are_those_that_answered_nothing_or_older() -> None:
    winner = _entry(5, "b")
    answers = {
        "n1": winner,
        "n2": None,
        "n3": _entry(4),
        "n4": _entry(5, "a"),
        "n5": _entry(5, "b"),
    }
    assert stale_replicas(winner, answers) == ["n2", "n3", "n4"]


def test_the_repair_bucket_allows_a_burst_then_its_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(4, lambda: now[0])
    assert [bucket.take() for _ in range(5)] == [True, True, True, True, False]
    now[0] += 0.25  # a quarter second earns one token
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] += 60.0  # a long pause refills the burst, no more
    assert sum(bucket.take() for _ in range(10)) == 4


# -- gossip queue ------------------------------------------------------------------------


def test_the_gossip_queue_sends_the_least_sent_first_a_bounded_number_of_times() -> None:
    from gridkv.cluster.membership.dissemination import Dissemination
    from gridkv.wire.messages import MemberRecord

    queue = Dissemination()
    a1, b, a2 = (MemberRecord(n, f"{n}:1", i, 0, "me") for n, i in (("a", 1), ("b", 1), ("a", 2)))
    queue.add(a1)
    queue.add(b)
    assert queue.take(1, limit=2) == [a1]
    assert queue.take(1, limit=2) == [b]  # b was sent less often
    queue.add(a2)  # the newer record of a replaces the older, as never sent
    assert len(queue) == 2
    assert queue.take(5, limit=2) == [a2, b]
    assert queue.take(5, limit=2) == [a2]  # b reached its limit and left
    assert not queue
    assert queue.take(5, limit=2) == []
