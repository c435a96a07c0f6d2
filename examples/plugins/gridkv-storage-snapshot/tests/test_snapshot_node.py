"""Real nodes pick the installed backend through ``storage.backend`` and restart warm."""

from __future__ import annotations

from pathlib import Path

import pytest
from gridkv import AsyncGridKV
from gridkv.testing.waiting import wait_until
from gridkv.transport import MemoryNetwork, MemoryTransport
from gridkv_storage_snapshot import DIR_ENV, SnapshotReader, SnapshotStorage, snapshot_path

HANDOFF = 0.5
ANTI_ENTROPY = 0.2
TOMBSTONE_TTL = 3.0  # a snapshot may be used for TOMBSTONE_TTL - HANDOFF = 2.5 s


@pytest.fixture
def snapshot_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of the test's own, named by GRIDKV_SNAPSHOT_DIR."""
    directory = tmp_path / "snapshots"
    monkeypatch.setenv(DIR_ENV, str(directory))
    return directory


def node(name: str, net: MemoryNetwork, seed: str = "") -> AsyncGridKV:
    """A node on the test's own in-process network, its storage named by the options only."""
    address = f"{name}:1"
    return AsyncGridKV(
        local_node_id=name,
        local_address=address,
        seed_addrs=[seed] if seed else [],
        transport=MemoryTransport(address, net, timeout=0.5),
        storage={"backend": "snapshot"},
        replica_count=3,
        disable_auth=True,
        log={"level": "error"},
    )


def storage_of(kv: AsyncGridKV) -> SnapshotStorage:
    storage = kv.node.storage
    assert isinstance(storage, SnapshotStorage)
    return storage


async def test_a_node_picks_the_backend_and_has_its_keys_after_a_restart(
    snapshot_dir: Path,
) -> None:
    net = MemoryNetwork()
    async with node("solo", net) as kv:
        await kv.wait_ready(timeout=10)
        assert kv.stats().storage.backend == "snapshot"
        assert storage_of(kv).loaded == 0
        for i in range(100):
            await kv.set(f"k{i}", b"v%d" % i)
        await kv.set("session", b"s", ttl=3600)
        await kv.delete("k0")
    assert snapshot_path(snapshot_dir, "solo").exists()

    again = node("solo", net)
    assert storage_of(again).loaded == 101  # 99 values, the session, k0's tombstone
    async with again:
        await again.wait_ready(timeout=10)
        assert await again.get("k1") == b"v1"
        assert await again.get("k99") == b"v99"
        assert await again.get("session") == b"s"
        assert await again.get("k0") is None  # the delete came back with it
        stats = again.stats().storage
        assert (stats.backend, stats.keys, stats.tombstones) == ("snapshot", 100, 1)


async def test_a_node_that_left_a_cluster_comes_back_with_what_it_held(
    snapshot_dir: Path,
) -> None:
    net = MemoryNetwork()
    nodes = [node("c0", net), node("c1", net, "c0:1"), node("c2", net, "c0:1")]
    try:
        for kv in nodes:
            await kv.start()
        for kv in nodes:
            await kv.wait_ready(timeout=10)
        await wait_until(lambda: all(len(kv.stats().cluster.members) == 3 for kv in nodes))
        for i in range(50):
            await nodes[0].set(f"k{i}", b"v%d" % i, consistency="all")
        # A graceful close hands c2's partitions over and then drops them; the snapshot was
        # written before (the plugin's gridkv_node_stopping hook).
        await nodes[2].close()
        await nodes[0].delete("k1", consistency="quorum")  # while c2 is away

        back = node("c2", net, "c0:1")
        nodes[2] = back
        assert storage_of(back).loaded == 50
        partition = nodes[0].node.ensure_table().partition_of("k1")
        assert storage_of(back).get(partition, "k1") == b"v1"  # from before the delete
        await back.start()
        await back.wait_ready(timeout=10)
        await wait_until(lambda: all(len(kv.stats().cluster.members) == 3 for kv in nodes))
        # The delete it missed reaches it (its peers kept the tombstone) and wins over the
        # value it came back with.
        await wait_until(lambda: storage_of(back).get(partition, "k1") is None)
        assert await back.get("k1", consistency="one") is None
        for i in range(2, 50):
            assert await back.get(f"k{i}", consistency="one") == b"v%d" % i
    finally:
        for kv in reversed(nodes):
            await kv.close()


def quick_node(name: str, net: MemoryNetwork, seed: str = "") -> AsyncGridKV:
    """A node with short handoff, anti-entropy and tombstone times: it settles in 1.4 s."""
    address = f"{name}:1"
    return AsyncGridKV(
        local_node_id=name,
        local_address=address,
        seed_addrs=[seed] if seed else [],
        transport=MemoryTransport(address, net, timeout=0.2),
        storage={"backend": "snapshot", "expiry_interval": 0.05},
        replica_count=2,
        handoff_timeout=HANDOFF,
        anti_entropy_interval=ANTI_ENTROPY,
        tombstone_ttl=TOMBSTONE_TTL,
        disable_auth=True,
        log={"level": "critical"},
    )


def file_as_of(path: Path) -> int:
    with SnapshotReader(path, 1 << 20) as reader:
        return reader.header.as_of_ms


async def test_a_node_restarted_while_cut_off_does_not_bring_a_deleted_key_back(
    snapshot_dir: Path,
) -> None:
    """Restarted from its snapshot while cut off from the cluster, a node runs alone for longer
    than it takes to settle: its records must keep the snapshot's as-of time, or the snapshot
    it writes next carries them past the time the cluster keeps the tombstone of a delete it
    missed, and the deleted value comes back."""
    net = MemoryNetwork()
    a, b = quick_node("a", net), quick_node("b", net, "a:1")
    nodes = [b]
    try:
        await a.start()
        await b.start()
        await a.wait_ready(10)
        await b.wait_ready(10)
        await wait_until(lambda: len(a.stats().cluster.members) == 2, timeout=10)
        await a.set("k", b"old", consistency="all")
        await a.close(2)  # snapshot S1 (k = old); a leaves gracefully
        path = snapshot_path(snapshot_dir, "a")
        as_of_s1 = file_as_of(path)
        await b.delete("k")  # while a is away: b keeps the tombstone for tombstone_ttl

        net.partition(["a:1"], ["b:1"])  # a comes back cut off from b
        a2 = quick_node("a", net, "b:1")
        nodes.append(a2)
        assert storage_of(a2).loaded == 1  # k = old, from S1
        await a2.start()
        # b collects the tombstone (tombstone_ttl passed, a left, no one dead): by then a2 has
        # run for more than twice its settle time, alone.
        await wait_until(lambda: b.stats().storage.tombstones == 0, timeout=15)
        assert storage_of(a2).as_of() == as_of_s1  # not settled
        await a2.close(0.5)  # snapshot S2: k = old, still as of S1
        nodes.remove(a2)
        assert file_as_of(path) == as_of_s1

        net.heal()
        a3 = quick_node("a", net, "b:1")  # S2 is too old to use: a3 starts empty
        nodes.append(a3)
        loaded = storage_of(a3).loaded
        await a3.start()
        await a3.wait_ready(10)
        await wait_until(lambda: len(a3.stats().cluster.members) == 2, timeout=10)
        assert (loaded, await a3.get("k", consistency="all")) == (0, None), (
            "the key deleted while 'a' was away is back"
        )
    finally:
        for kv in nodes:
            await kv.close(0.5)


async def test_a_node_restarted_among_its_peers_settles_and_its_snapshot_is_current(
    snapshot_dir: Path,
) -> None:
    net = MemoryNetwork()
    a, b = quick_node("a", net), quick_node("b", net, "a:1")
    nodes = [b]
    try:
        await a.start()
        await b.start()
        await a.wait_ready(10)
        await wait_until(lambda: len(a.stats().cluster.members) == 2, timeout=10)
        await a.set("k", b"v", consistency="all")
        await a.close(2)
        path = snapshot_path(snapshot_dir, "a")
        as_of_s1 = file_as_of(path)

        a2 = quick_node("a", net, "b:1")
        nodes.append(a2)
        assert storage_of(a2).loaded == 1
        await a2.start()
        await a2.wait_ready(10)
        await wait_until(lambda: storage_of(a2).settled, timeout=10)
        await a2.close(2)
        nodes.remove(a2)
        assert file_as_of(path) > as_of_s1
    finally:
        for kv in nodes:
            await kv.close(0.5)
