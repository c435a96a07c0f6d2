from __future__ import annotations

import threading

import pytest
from gridkv.base.errors import ClockDriftExceeded
from gridkv.base.hlc import HLC, MAX_COUNTER, pack, physical_ms, unpack, version_wins
from hypothesis import given
from hypothesis import strategies as st


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_pack_and_unpack_are_inverse() -> None:
    ts = pack(1_700_000_000_123, 7)
    assert unpack(ts) == (1_700_000_000_123, 7)
    assert physical_ms(ts) == 1_700_000_000_123
    with pytest.raises(ValueError):  # noqa: PT011
        pack(1, MAX_COUNTER + 1)


def test_now_follows_wall_time() -> None:
    clock = FakeClock()
    hlc = HLC(clock)
    assert physical_ms(hlc.now()) == int(clock.t * 1000)
    clock.t += 5
    assert physical_ms(hlc.now()) == int(clock.t * 1000)


def test_now_is_strictly_monotonic_when_the_wall_clock_stands_still_or_goes_back() -> None:
    clock = FakeClock()
    hlc = HLC(clock)
    seen = [hlc.now() for _ in range(100)]
    clock.t -= 10
    seen += [hlc.now() for _ in range(100)]
    assert all(b > a for a, b in zip(seen, seen[1:], strict=False))


def test_counter_overflow_borrows_the_next_millisecond() -> None:
    clock = FakeClock()
    hlc = HLC(clock)
    stamps = [hlc.now() for _ in range(MAX_COUNTER + 10)]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    assert physical_ms(stamps[-1]) == int(clock.t * 1000) + 1


def test_update_moves_past_a_remote_timestamp() -> None:
    clock = FakeClock()
    hlc = HLC(clock, max_drift=10)
    remote = pack(int(clock.t * 1000) + 5000, 3)
    merged = hlc.update(remote)
    assert merged == remote + 1  # the remote's millisecond, its counter plus one
    assert hlc.now() == merged + 1  # the wall clock is still behind: the counter goes on


def test_update_refuses_a_clock_beyond_max_drift_and_keeps_its_time() -> None:
    clock = FakeClock()
    hlc = HLC(clock, max_drift=1)
    before = hlc.now()
    with pytest.raises(ClockDriftExceeded, match="max_clock_drift"):
        hlc.update(pack(int(clock.t * 1000) + 5000, 0))
    assert physical_ms(hlc.now()) == physical_ms(before)


def test_concurrent_now_never_repeats() -> None:
    hlc = HLC()
    results: list[list[int]] = [[] for _ in range(8)]

    def work(out: list[int]) -> None:
        for _ in range(2000):
            out.append(hlc.now())

    threads = [threading.Thread(target=work, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps = [s for r in results for s in r]
    assert len(set(stamps)) == len(stamps)


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("tick"), st.floats(min_value=-2, max_value=2)),
            st.tuples(st.just("recv"), st.integers(min_value=-5000, max_value=5000)),
        ),
        max_size=60,
    )
)
def test_every_event_gets_a_larger_timestamp_than_all_before(
    events: list[tuple[str, float]],
) -> None:
    clock = FakeClock()
    hlc = HLC(clock, max_drift=10)
    last = 0
    for kind, amount in events:
        if kind == "tick":
            clock.t += amount
            ts = hlc.now()
        else:
            remote = pack(max(0, int(clock.t * 1000) + int(amount)), 0)
            ts = hlc.update(remote)
            assert ts > remote
        assert ts > last
        last = ts


@given(
    st.integers(0, 2**64 - 1), st.text(min_size=1), st.integers(0, 2**64 - 1), st.text(min_size=1)
)
def test_version_order_is_total_and_antisymmetric(ta: int, na: str, tb: int, nb: str) -> None:
    a_wins = version_wins(ta, na, tb, nb)
    b_wins = version_wins(tb, nb, ta, na)
    if (ta, na) == (tb, nb):
        assert not a_wins and not b_wins
    else:
        assert a_wins != b_wins
