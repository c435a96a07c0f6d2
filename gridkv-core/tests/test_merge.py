from __future__ import annotations

from gridkv.storage.base import Entry, merge
from hypothesis import given
from hypothesis import strategies as st

entries = st.builds(
    Entry,
    key=st.just("k"),
    value=st.one_of(st.none(), st.binary(max_size=8)),
    version=st.integers(0, 50),
    writer=st.sampled_from(["a", "b", "c"]),
    expires_at=st.integers(0, 10),
)
maybe = st.one_of(st.none(), entries)


def same(a: Entry | None, b: Entry | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.version, a.writer) == (b.version, b.writer)


@given(maybe, maybe)
def test_merge_is_commutative(a: Entry | None, b: Entry | None) -> None:
    assert same(merge(a, b), merge(b, a))


@given(maybe, maybe, maybe)
def test_merge_is_associative(a: Entry | None, b: Entry | None, c: Entry | None) -> None:
    assert same(merge(merge(a, b), c), merge(a, merge(b, c)))


@given(maybe)
def test_merge_is_idempotent(a: Entry | None) -> None:
    assert same(merge(a, a), a)


@given(st.lists(entries, min_size=1, max_size=12), st.randoms())
def test_any_order_of_delivery_converges_to_the_greatest_version(items: list[Entry], rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(items)
    rnd.shuffle(shuffled)
    result: Entry | None = None
    for e in shuffled:
        result = merge(result, e)
    best = max(items, key=lambda e: (e.version, e.writer))
    assert result is not None
    assert (result.version, result.writer) == (best.version, best.writer)


def test_a_tombstone_with_the_greater_version_wins_over_a_value() -> None:
    value = Entry("k", b"v", 10, "a")
    tomb = Entry("k", None, 11, "a")
    assert merge(value, tomb) is tomb
    assert merge(tomb, value) is tomb
