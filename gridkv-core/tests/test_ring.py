from __future__ import annotations

import os
import subprocess
import sys

from gridkv.cluster.ring import HashRing, PartitionTable, partition_of
from hypothesis import given, settings
from hypothesis import strategies as st

NODES = [f"node-{i}" for i in range(10)]


def test_ownership_is_balanced_at_150_virtual_nodes_and_10_nodes() -> None:
    for seed in range(5):
        nodes = [f"host-{seed}-{i}" for i in range(10)]
        table = PartitionTable.build(nodes, 1024, 3, 150)
        counts = table.primaries()
        mean = 1024 / 10
        assert max(counts.values()) / mean <= 1.2
        slots: dict[str, int] = {}
        for replicas in table.replicas:
            for n in replicas:
                slots[n] = slots.get(n, 0) + 1
        assert max(slots.values()) / (1024 * 3 / 10) <= 1.2


def test_adding_an_eleventh_node_moves_few_partitions() -> None:
    for seed in range(5):
        nodes = [f"host-{seed}-{i}" for i in range(10)]
        before = PartitionTable.build(nodes, 1024, 3, 150)
        after = PartitionTable.build([*nodes, f"host-{seed}-new"], 1024, 3, 150)
        moved = len(before.moved_partitions(after))
        assert moved <= 1.5 * 1024 / 11
        # the new node takes about its fair share
        assert after.primaries()[f"host-{seed}-new"] >= 0.8 * 1024 / 11


def test_replicas_are_distinct_and_as_many_as_asked() -> None:
    table = PartitionTable.build(NODES, 256, 3, 50)
    assert all(len(set(r)) == 3 for r in table.replicas)
    small = PartitionTable.build(NODES[:2], 64, 3, 50)
    assert all(len(r) == 2 for r in small.replicas)
    assert PartitionTable.build([], 8, 3, 10).replicas == ((),) * 8


def test_table_does_not_depend_on_node_order() -> None:
    a = PartitionTable.build(NODES, 512, 3, 40)
    b = PartitionTable.build(list(reversed(NODES)), 512, 3, 40)
    assert a == b


@given(st.text(min_size=1, max_size=50))
def test_partition_of_is_stable_and_in_range(key: str) -> None:
    try:
        key.encode()
    except UnicodeEncodeError:
        return
    p = partition_of(key, 1024)
    assert 0 <= p < 1024
    assert p == PartitionTable.build(["a"], 1024, 1, 1).partition_of(key)


def test_partition_of_is_the_same_in_every_process() -> None:
    keys = ["a", "user:1", "ключ", "🙂"]
    code = "import sys; from gridkv.cluster.ring import partition_of; " + (
        f"print([partition_of(k, 1024) for k in {keys!r}])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert outputs == {f"{[partition_of(k, 1024) for k in keys]}\n"}


@settings(max_examples=25)
@given(st.sets(st.text(alphabet="abcdef", min_size=1, max_size=6), min_size=1, max_size=8))
def test_ring_walk_returns_distinct_members(nodes: set[str]) -> None:
    ring = HashRing(nodes, 10)
    for pos in (0, 2**63, 2**64 - 1):
        found = ring.walk(pos, 3)
        assert len(found) == min(3, len(nodes))
        assert len(set(found)) == len(found)
        assert set(found) <= nodes
