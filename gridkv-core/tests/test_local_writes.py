"""The write's fast path (``set_here_first``): what it stores equals what the checked way
stores, and everything it does not settle goes the checked way."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from gridkv import (
    AsyncGridKV,
    GridKV,
    InvalidArgument,
    MemoryLimitExceeded,
    QuorumNotReached,
    ValueTooLarge,
)
from gridkv.api.base import ClientBase
from gridkv.storage.base import Entry
from gridkv.testing.transports import node_options
from gridkv.testing.waiting import wait_for
from gridkv.transport import MemoryNetwork, MemoryTransport

_ids = count()


@pytest.fixture
def kv() -> Iterator[GridKV]:
    options = node_options(f"writes{next(_ids)}")
    options["ttl"] = 0
    with GridKV(**options) as client:
        yield client


class _Checked:
    """Counts the writes that took the checked way (``_plan_write``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = ClientBase._plan_write

        def counted(client: ClientBase, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(client, *args, **kwargs)

        monkeypatch.setattr(ClientBase, "_plan_write", counted)


def _entry(kv: GridKV, key: str) -> Entry:
    found = kv.node.storage.get_entry(kv.node.table.partition_of(key), key)
    assert found is not None
    return found


@pytest.mark.parametrize("ttl", [None, 0, 30, 2.5, 1e-6, 1 << 20])
def test_a_plain_write_is_stored_on_the_spot_with_the_expiry_the_checked_way_gives(
    kv: GridKV, monkeypatch: pytest.MonkeyPatch, ttl: float | None
) -> None:
    checked = _Checked(monkeypatch)
    # A TTL of a microsecond is over by the time the entry is read: read it as of the write
    # (no sweep in between, the storage's clock held at ``before``).
    storage = kv.node.storage
    monkeypatch.setattr(storage, "sweep", lambda *args, **kwargs: 0)
    before = kv.node.now_ms()
    kv.set("k", b"value", ttl=ttl)
    after = kv.node.now_ms()
    assert checked.calls == 0
    monkeypatch.setattr(storage, "_clock_ms", lambda: before)
    entry = _entry(kv, "k")
    monkeypatch.undo()
    assert (entry.key, entry.value, entry.writer) == ("k", b"value", kv.node_id)
    if not ttl:
        assert entry.expires_at == 0
    else:
        span = max(1, math.ceil(ttl * 1000))
        assert before + span <= entry.expires_at <= after + span
    if not ttl or ttl >= 1:  # (a TTL of a millisecond may have passed already)
        assert kv.get("k") == b"value"


def test_each_write_gets_a_newer_version(kv: GridKV) -> None:
    versions = []
    for i in range(50):
        kv.set("k", b"%d" % i)
        versions.append(_entry(kv, "k").version)
    assert versions == sorted(set(versions))
    assert kv.get("k") == b"49"


@pytest.mark.parametrize(
    "call",
    [
        lambda kv: kv.set("k", bytearray(b"v")),
        lambda kv: kv.set("k", memoryview(b"v")),
        lambda kv: kv.set("k", b"v", ttl=timedelta(seconds=5)),
        lambda kv: kv.set("k", b"v", consistency="one"),
        lambda kv: kv.set("k", b"v", ttl=True),
    ],
    ids=["bytearray", "memoryview", "timedelta", "consistency", "bool ttl"],
)
def test_what_the_fast_path_does_not_settle_goes_the_checked_way(
    kv: GridKV, monkeypatch: pytest.MonkeyPatch, call: Any
) -> None:
    checked = _Checked(monkeypatch)
    try:
        call(kv)
    except InvalidArgument:
        pass  # a bool TTL is refused there, with the checked way's message
    assert checked.calls == 1


@pytest.mark.parametrize(
    ("ttl", "error"),
    [(-1, InvalidArgument), (math.nan, InvalidArgument), (math.inf, InvalidArgument)],
)
def test_bad_ttls_get_the_checked_ways_error(kv: GridKV, ttl: float, error: type) -> None:
    with pytest.raises(error, match="ttl"):
        kv.set("k", b"v", ttl=ttl)
    assert kv.get("k") is None


def test_bad_keys_and_values_get_the_checked_ways_error(kv: GridKV) -> None:
    with pytest.raises(ValueTooLarge, match="max_value_bytes"):
        kv.set("k", b"v" * (kv.options.max_value_bytes + 1))
    for key in ("", "\udc80", "k" * (kv.options.max_key_bytes + 1)):
        with pytest.raises(Exception, match="key") as caught:
            kv.set(key, b"v")
        assert caught.type.__module__.startswith("gridkv")


def test_a_partition_this_node_does_not_hold_goes_the_checked_way(
    kv: GridKV, monkeypatch: pytest.MonkeyPatch
) -> None:
    partition = kv.node.table.partition_of("k")
    kv.node.local_reads[partition] = 0  # as while the partition moves in or the view changes
    checked = _Checked(monkeypatch)
    kv.set("k", b"v")
    assert checked.calls == 1
    assert kv.get("k") == b"v"


def test_a_full_backlog_sends_the_write_the_checked_way_which_waits_then_refuses() -> None:
    options = node_options(f"writes{next(_ids)}")
    options["replication_timeout"] = 0.2
    with GridKV(**options) as kv:
        kv.node.coordinator.batcher.over_limit.add("somebody")  # a replica far behind
        with pytest.raises(QuorumNotReached, match="backlog"):
            kv.set("k", b"v")
        assert kv.get("k") is None  # nothing of the refused write was stored
        kv.node.coordinator.batcher.over_limit.clear()
        kv.set("k", b"v")
        assert kv.get("k") == b"v"


def test_a_full_store_refuses_the_write_and_keeps_the_old_value() -> None:
    options = node_options(f"writes{next(_ids)}")
    options["storage"] = {"max_memory_mb": 1}
    options["max_value_bytes"] = 300_000
    with GridKV(**options) as kv:
        kv.set("kept", b"old")
        incompressible = random.Random(12).randbytes(200_000)
        with pytest.raises(MemoryLimitExceeded):
            for i in range(100):
                kv.set(f"big{i}", incompressible)
        assert kv.get("kept") == b"old"


async def test_the_async_facade_takes_the_same_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = _Checked(monkeypatch)
    async with AsyncGridKV(**node_options(f"writes{next(_ids)}")) as kv:
        await kv.set("k", b"v", ttl=10)
        assert checked.calls == 0
        assert await kv.get("k") == b"v"
        await kv.set("k", bytearray(b"w"))
        assert checked.calls == 1
        assert await kv.get("k") == b"w"


def test_writes_from_many_threads_all_reach_the_other_replica() -> None:
    # The loop is woken once for the writes handed over until it runs, not once each: none
    # of them may be left behind in the hand-over, whatever the interleaving of the threads.
    network = MemoryNetwork()
    common: dict[str, Any] = {"replica_count": 2, "disable_auth": True, "log": {"level": "error"}}
    with (
        GridKV(local_node_id="w0", **common, transport=MemoryTransport("w0:1", network)) as a,
        GridKV(
            local_node_id="w1",
            seed_addrs=["w0:1"],
            **common,
            transport=MemoryTransport("w1:1", network),
        ) as b,
    ):
        a.wait_ready(10)
        b.wait_ready(10)
        wait_for("both nodes see each other", lambda: len(a.node.membership.live_ids()) == 2)
        keys = [f"t{t}-{i}" for t in range(4) for i in range(300)]

        def writer(mine: list[str]) -> None:
            for key in mine:
                a.set(key, key.encode())

        threads = [threading.Thread(target=writer, args=(keys[t::4],)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        storage = b.node.storage

        def stored_on_b(key: str) -> bool:
            found = storage.get(b.node.table.partition_of(key), key)
            return found == key.encode()

        wait_for("every write is on the other replica", lambda: all(map(stored_on_b, keys)))


def test_one_hand_over_takes_only_the_writes_there_when_it_starts(kv: GridKV) -> None:
    # Review finding: the loop's hand-over took writes until none were left, so threads that
    # kept writing held the loop in one callback (no I/O served) for as long as they wrote.
    coordinator = kv.node.coordinator
    taken: list[int] = []

    def enqueue(partition: int, entry: Entry, stored_by: str = "") -> None:
        taken.append(partition)
        if len(taken) < 1000:  # another thread hands a write over meanwhile
            coordinator._handed.append((partition + 1, entry, stored_by))

    entry = kv.node.new_entry("k", b"v", 0)
    coordinator._handed.extend((p, entry, "") for p in range(3))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(coordinator, "_enqueue", enqueue)
        coordinator._take_handed()
    assert taken == [0, 1, 2]
    assert len(coordinator._handed) == 3  # the next call takes these
    coordinator._handed.clear()


def test_a_write_handed_over_after_the_loop_closed_is_refused() -> None:
    # Review finding: with a hand-over still scheduled when the loop stopped, later writes
    # from other threads were queued where nothing would ever take them, and reported done.
    kv = GridKV(**node_options(f"writes{next(_ids)}"))
    coordinator = kv.node.coordinator
    kv.close()
    coordinator._handing = True  # a hand-over was scheduled and never ran
    with pytest.raises(RuntimeError, match="closed"):
        coordinator.replicate_soon(0, kv.node.new_entry("k", b"v", 0))


def test_ttl_and_consistency_are_keyword_only_as_documented(kv: GridKV) -> None:
    with pytest.raises(TypeError):
        kv.set("k", b"v", 5)  # type: ignore[call-arg]
    assert kv.get("k") is None
