"""Level-one reads of the blocking facade sent from the calling thread (gridkv.api.direct).

Real nodes over tcp with authentication on: the reads answer what the loop's path answers,
use and respect the hot cache, spread over threads, and give a read back to the loop's path
whenever they cannot take it (a replica gone, a closed facade).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv import GridKV, ShuttingDown
from gridkv.api.direct import DirectPath
from gridkv.security.identity import new_secret
from gridkv.testing.waiting import wait_for


def options(node_id: str, secret: str, seeds: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "local_node_id": node_id,
        "local_address": "127.0.0.1:0",
        "seed_addrs": seeds,
        "network": {"type": "tcp"},
        "auth": {"cluster_secret": secret},
        "gossip_interval": "50ms",
        "failure_timeout": "300ms",
        "suspect_timeout": "500ms",
        **extra,
    }


@contextlib.contextmanager
def cluster(size: int, **extra: Any) -> Iterator[list[GridKV]]:
    secret = new_secret()
    nodes: list[GridKV] = []
    try:
        first = GridKV(**options("d0", secret, [], **extra))
        nodes.append(first)
        seed = first.stats().network.local_address
        for i in range(1, size):
            nodes.append(GridKV(**options(f"d{i}", secret, [seed], **extra)))
        for kv in nodes:
            kv.wait_ready(timeout=15)
        yield nodes
    finally:
        for kv in reversed(nodes):
            kv.close()


def direct(kv: GridKV) -> DirectPath:
    reads = kv._direct
    assert reads is not None
    return reads


def keys_owned_by(kv: GridKV, owner: str, count: int) -> list[str]:
    table = kv.node.ensure_table()
    found: list[str] = []
    i = 0
    while len(found) < count:
        key = f"k{i}"
        i += 1
        if table.owners(table.partition_of(key))[0] == owner:
            found.append(key)
    return found


def test_remote_reads_at_one_are_answered_from_the_calling_thread() -> None:
    with cluster(2, replica_count=1, hot_cache_size=0) as (a, b):
        keys = keys_owned_by(a, "d1", 50)
        for i, key in enumerate(keys):
            b.set(key, f"v{i}".encode())
        b.delete(keys[-1])
        reads = direct(a)
        assert [a.get(key) for key in keys[:-1]] == [f"v{i}".encode() for i in range(49)]
        assert a.get(keys[-1]) is None  # a tombstone reads as missing
        assert a.get("never-written-" + keys[0]) is None
        assert reads.answered >= 50 and reads.given_back == 0
        # Other levels go through the loop, as before.
        answered = reads.answered
        assert a.get(keys[0], consistency="all") == b"v0"
        assert reads.answered == answered


def test_the_hot_cache_is_used_and_a_write_here_is_read_back() -> None:
    with cluster(2, replica_count=1) as (a, b):
        key = keys_owned_by(a, "d1", 1)[0]
        b.set(key, b"old")
        assert a.get(key) == b"old"
        asked = direct(a).answered
        assert a.get(key) == b"old"  # from the hot cache: nobody asked
        assert direct(a).answered == asked
        a.set(key, b"new")  # through this node: its cached answer is dropped
        assert a.get(key) == b"new"


def test_threads_read_over_connections_of_their_own() -> None:
    with cluster(2, replica_count=1, hot_cache_size=0) as (a, b):
        keys = keys_owned_by(a, "d1", 40)
        for key in keys:
            b.set(key, key.encode())
        wrong: list[str] = []

        def reader() -> None:
            for _ in range(5):
                wrong.extend(k for k in keys if a.get(k) != k.encode())

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert wrong == []
        assert direct(a).dials == 8  # one connection per thread to the one replica...
        assert len(direct(a)._open) == 0  # ...closed when its thread ended


def test_a_replica_gone_gives_the_read_to_the_loop_which_asks_another() -> None:
    with cluster(3, replica_count=2, hot_cache_size=0) as nodes:
        a, b, _ = nodes
        key = next(k for k in keys_owned_by(a, "d1", 200) if "d2" in owners(a, k))
        b.set(key, b"kept", consistency="all")
        assert a.get(key) == b"kept"
        # The first replica stops answering (its transport closes) while a's view still has
        # it: this thread's connection breaks, and the loop's path asks the other replica.
        b._runner.submit(b.node.transport.close()).result(10)
        assert a.get(key) == b"kept"
        assert direct(a).given_back >= 1
        wait_for("b is out of a's view", lambda: "d1" not in a.node.membership.live_ids(), 10)
        assert a.get(key) == b"kept"
        b.close(timeout=0.5)  # it cannot hand anything over any more


def owners(kv: GridKV, key: str) -> tuple[str, ...]:
    table = kv.node.ensure_table()
    return table.owners(table.partition_of(key))


def test_a_closed_facade_refuses_reads_and_keeps_no_connection() -> None:
    with cluster(2, replica_count=1, hot_cache_size=0) as (a, b):
        key = keys_owned_by(a, "d1", 1)[0]
        b.set(key, b"v")
        assert a.get(key) == b"v"
        reads = direct(a)
        a.close()
        assert len(reads._open) == 0
        with pytest.raises(ShuttingDown):
            a.get(key)


def test_writes_one_replica_satisfies_go_from_the_calling_thread_and_reach_every_replica() -> None:
    with cluster(3, replica_count=2, hot_cache_size=0) as nodes:
        a = nodes[0]
        keys = [k for k in keys_owned_by(a, "d1", 400) if "d0" not in owners(a, k)][:30]
        reads = direct(a)
        before = reads.answered
        for i, key in enumerate(keys):
            a.set(key, f"w{i}".encode(), consistency="one")
        a.delete(keys[0], consistency="one")
        assert reads.answered == before + len(keys) + 1 and reads.given_back == 0
        # The first replica has each at once; the other gets it through the node's batches.
        by_id = {kv.node_id: kv for kv in nodes}

        def held_by(replica: str, key: str) -> bytes | None:
            table = a.node.ensure_table()
            value: bytes | None = by_id[replica].node.storage.get(table.partition_of(key), key)
            return value

        for i, key in enumerate(keys[1:], 1):
            value = f"w{i}".encode()
            second = owners(a, key)[1]
            assert held_by("d1", key) == value

            def arrived(key: str = key, second: str = second, value: bytes = value) -> bool:
                return held_by(second, key) == value

            wait_for("the second replica has it", arrived)
            assert a.get(key, consistency="all") == value
        assert a.get(keys[0], consistency="all") is None
        # A level that needs two replicas goes through the loop.
        a.set(keys[1], b"both", consistency="all")
        assert reads.answered == before + len(keys) + 1
        assert nodes[2].get(keys[1], consistency="all") == b"both"


def test_an_owner_reads_its_own_storage_while_a_partition_moves_in() -> None:
    # Review finding: with a partition moving in, a level-one read of a key this node holds
    # is not "local", and the calling-thread path asked the other replica instead (and cached
    # its older answer), so a write made here was not read back.
    with cluster(2, replica_count=2, batch_window="2s", batch_threshold=1000) as (a, b):
        node = a.node
        key = keys_owned_by(a, "d1", 1)[0]
        partition = node.ensure_table().partition_of(key)
        b.set(key, b"old", consistency="all")
        with node.handoff._lock:  # partition moving in, as Handoff.table_changed records it
            node.handoff._receiving[partition] = (("d1",), node.handoff.ctx.loop_time() + 60)
        node.refresh_local_reads()
        assert node.holds(partition) and not node.reads_here(partition)
        a.set(key, b"new")  # held here: stored at once; b gets it only in 2 s
        assert a.get(key) == b"new"
        assert direct(a).answered == 0
