"""Nodes as separate OS processes on 127.0.0.1 over the transport under test
(``GRIDKV_TEST_TRANSPORT``): writes and reads through any node, ``kill -9`` of one, its restart
on the same id and address, and a graceful leave. The memory transport does not cross
processes, so its run skips these."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
from gridkv import Options
from gridkv.cluster.ring import PartitionTable
from gridkv.testing.cluster import ProcessCluster
from gridkv.testing.transports import transport_under_test

TRANSPORT = transport_under_test()
pytestmark = pytest.mark.skipif(
    TRANSPORT == "memory", reason="the memory transport does not cross processes"
)
NETWORK = {"network": {"type": TRANSPORT}}

N = 5
KEYS = 2000


def assert_all_readable(cluster: ProcessCluster, prefix: str, count: int, **kw: Any) -> None:
    for node in cluster.live():
        result = node.call("check_many", prefix=prefix, count=count, **kw)
        assert result == {"missing": [], "wrong": [], "failures": {}}, node.node_id


def table_of(cluster: ProcessCluster, node_ids: list[str]) -> PartitionTable:
    """The partition table the cluster's nodes build when ``node_ids`` are alive."""
    options = Options.from_mapping(cluster.options)
    return PartitionTable.build(
        node_ids, options.partition_count, options.replica_count, options.virtual_nodes
    )


def assert_gone(pids: list[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_kill_9_and_restart_in_a_five_process_cluster() -> None:
    everyone = {f"p{i}": "alive" for i in range(N)}
    with ProcessCluster(N, {"replica_count": 3, **NETWORK}) as cluster:
        for node in cluster.live():
            node.call("wait_ready", timeout=15)
        cluster.wait_for("every node sees all five alive", lambda: cluster.converged(everyone))

        # Writes through two nodes; every key readable through every node.
        assert cluster.node(0).call("set_many", prefix="a", count=KEYS, consistency="quorum") == {
            "written": KEYS,
            "failures": {},
        }
        assert cluster.node(3).call("set_many", prefix="b", count=500, consistency="all") == {
            "written": 500,
            "failures": {},
        }
        assert_all_readable(cluster, "a", KEYS)
        assert_all_readable(cluster, "b", 500, consistency="quorum")

        # kill -9 one node while another writes at quorum: no acknowledged write is lost,
        # and no write fails (two of each key's three replicas remain).
        writing: dict[str, Any] = {}
        writer = threading.Thread(
            target=lambda: writing.update(
                cluster.node(1).call("set_many", prefix="c", count=KEYS, consistency="quorum")
            )
        )
        writer.start()
        cluster.kill(2)
        writer.join(60)
        assert writing == {"written": KEYS, "failures": {}}
        cluster.wait_for(
            "the survivors declare p2 dead",
            lambda: cluster.converged({**everyone, "p2": "dead"}),
            timeout=15,
        )
        for prefix, count in (("a", KEYS), ("b", 500), ("c", KEYS)):
            assert_all_readable(cluster, prefix, count)
            assert_all_readable(cluster, prefix, count, consistency="quorum")

        # Writes while p2 is down, then p2 restarts on the same id and address.
        assert cluster.node(4).call("set_many", prefix="d", count=KEYS, consistency="quorum") == {
            "written": KEYS,
            "failures": {},
        }
        address = cluster.node(0).address  # unchanged by the restart of another node
        restarted = cluster.restart(2)
        assert restarted.node_id == "p2"
        restarted.call("wait_ready", timeout=15)
        cluster.wait_for("p2 is alive again everywhere", lambda: cluster.converged(everyone))
        assert cluster.node(0).address == address

        # It catches up: every key it is a replica of arrives in its own storage (handoff and
        # anti-entropy), and it serves every key.
        def caught_up() -> bool:
            return all(
                not restarted.call("local_missing", prefix=prefix, count=KEYS)["missing"]
                for prefix in ("a", "c", "d")
            )

        cluster.wait_for("p2 holds every key it is a replica of", caught_up, timeout=30)
        table = table_of(cluster, [f"p{i}" for i in range(N)])
        owned = sum("p2" in table.owners(table.partition_of(f"d{i}")) for i in range(KEYS))
        assert restarted.call("local_missing", prefix="d", count=KEYS)["owned"] == owned
        for prefix in ("a", "c", "d"):
            result = restarted.call("check_many", prefix=prefix, count=KEYS)
            assert result == {"missing": [], "wrong": [], "failures": {}}
        pids = cluster.pids()
    assert len(pids) == N + 1
    assert_gone(pids)


def test_a_graceful_leave_hands_data_over_and_no_process_is_left_behind() -> None:
    with ProcessCluster(3, {"replica_count": 1, **NETWORK}, prefix="g") as cluster:
        for node in cluster.live():
            node.call("wait_ready", timeout=15)
        cluster.wait_for(
            "all three alive",
            lambda: cluster.converged({"g0": "alive", "g1": "alive", "g2": "alive"}),
        )
        cluster.node(0).call("set_many", prefix="k", count=KEYS, consistency="all")
        table = table_of(cluster, ["g0", "g1", "g2"])
        held = sum(table.owners(table.partition_of(f"k{i}")) == ("g1",) for i in range(KEYS))
        assert 0 < held == cluster.node(1).call("keys")
        cluster.node(1).stop()  # close(): its partitions are handed to their new owner
        cluster.nodes[1] = None
        cluster.wait_for(
            "g1 has left", lambda: cluster.converged({"g0": "alive", "g1": "left", "g2": "alive"})
        )
        assert_all_readable(cluster, "k", KEYS)
        pids = cluster.pids()
    assert_gone(pids)


def test_nodes_closing_at_once_hand_every_key_to_the_one_that_stays() -> None:
    # Five of six close in the same instant (a fleet restarting): each hands its keys over
    # while the others it may still count as replicas leave too. A leaving node refuses
    # handoffs at once, so none waits out its close time-out, and none loses a key.
    count = 6
    ids = [f"f{i}" for i in range(count)]
    with ProcessCluster(count, {"replica_count": 1, **NETWORK}, prefix="f") as cluster:
        for node in cluster.live():
            node.call("wait_ready", timeout=15)
        cluster.wait_for("all alive", lambda: cluster.converged(dict.fromkeys(ids, "alive")))
        cluster.node(0).call("set_many", prefix="f", count=KEYS, consistency="all")
        leaving = [cluster.node(i) for i in range(1, count)]
        start = time.monotonic()
        threads = [threading.Thread(target=node.stop, daemon=True) for node in leaving]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        took = time.monotonic() - start
        for i in range(1, count):
            cluster.nodes[i] = None
        assert took < 10  # the closes used to retry peers that were leaving for 30 s
        assert cluster.node(0).call("keys") == KEYS
        assert_all_readable(cluster, "f", KEYS)
