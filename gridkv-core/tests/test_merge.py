"""Last-writer-wins merge: a CRDT, so replicas that see the same writes in any order agree.

A write is identified by ``(version, writer)``: one writer never makes two writes at one HLC
timestamp. The strategies below keep to that, so two entries with the same version and writer
are the same write, and every comparison is of whole entries (the value and the expiry too).
"""

from __future__ import annotations

import random

from gridkv.storage.base import Entry, merge
from hypothesis import given
from hypothesis import strategies as st

_writes = st.builds(
    Entry,
    key=st.just("k"),
    value=st.one_of(st.none(), st.binary(max_size=8)),
    version=st.integers(0, 50),
    writer=st.sampled_from(["a", "b", "c"]),
    expires_at=st.integers(0, 10),
)


def histories(min_size: int = 0, max_size: int = 12) -> st.SearchStrategy[list[Entry]]:
    """Writes of one key, no two with the same ``(version, writer)``."""
    return st.lists(
        _writes, min_size=min_size, max_size=max_size, unique_by=lambda e: (e.version, e.writer)
    )


def picks(count: int) -> st.SearchStrategy[list[Entry | None]]:
    """``count`` entries (or ``None``) drawn from one history, repeats allowed."""
    return histories(min_size=1).flatmap(
        lambda h: st.lists(st.one_of(st.none(), st.sampled_from(h)), min_size=count, max_size=count)
    )


@given(picks(2))
def test_merge_is_commutative(ab: list[Entry | None]) -> None:
    a, b = ab
    assert merge(a, b) == merge(b, a)


@given(picks(3))
def test_merge_is_associative(abc: list[Entry | None]) -> None:
    a, b, c = abc
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(picks(1))
def test_merge_is_idempotent(a: list[Entry | None]) -> None:
    assert merge(a[0], a[0]) == a[0]


@given(picks(2))
def test_merge_returns_one_of_its_inputs_whole(ab: list[Entry | None]) -> None:
    # Not the version of one with the value or expiry of the other.
    a, b = ab
    result = merge(a, b)
    assert result is a or result is b


@given(histories(min_size=1), st.randoms())
def test_any_order_of_delivery_converges_to_the_greatest_version(
    items: list[Entry], rnd: random.Random
) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    result: Entry | None = None
    for e in shuffled:
        result = merge(result, e)
    best = max(items, key=lambda e: (e.version, e.writer))
    assert result == best


def test_a_tombstone_with_the_greater_version_wins_over_a_value() -> None:
    value = Entry("k", b"v", 10, "a")
    tomb = Entry("k", None, 11, "a")
    assert merge(value, tomb) is tomb
    assert merge(tomb, value) is tomb


def test_on_equal_versions_the_greater_writer_wins_with_its_value() -> None:
    from_a = Entry("k", b"from a", 10, "a", expires_at=5)
    from_b = Entry("k", b"from b", 10, "b")
    assert merge(from_a, from_b) is from_b
    assert merge(from_b, from_a) is from_b
