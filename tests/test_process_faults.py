"""Deletes stay deleted over real processes: partitions and isolations with a one-second
``tombstone_ttl``, over the transport under test (``GRIDKV_TEST_TRANSPORT``; the memory
transport does not cross processes, so its run skips this).

Each node runs key lifecycles (written one to three times, then deleted) at quorum while the
test cuts the network between processes (:meth:`ProcessCluster.partition`, which black-holes
what a node sends to the other side). ``GRIDKV_FAULT_CYCLES`` sets the number of fault cycles
(two by default; ``nox -s faults`` runs more).
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import pytest
from gridkv.testing.cluster import ProcessCluster
from gridkv.testing.transports import transport_under_test

TRANSPORT = transport_under_test()
pytestmark = pytest.mark.skipif(
    TRANSPORT == "memory", reason="the memory transport does not cross processes"
)
N = 5
CYCLES = int(os.environ.get("GRIDKV_FAULT_CYCLES", "2"))
OPTIONS: dict[str, Any] = {
    "replica_count": 3,
    "tombstone_ttl": "1s",
    "handoff_timeout": "2s",
    "anti_entropy_interval": "500ms",
    "replication_timeout": "1s",
    "read_timeout": "1s",
    "storage": {"expiry_interval": "200ms"},
    "network": {"type": TRANSPORT},
}


def test_acknowledged_deletes_never_come_back_across_partitions_of_real_processes() -> None:
    rng = random.Random(7)
    everyone = {f"p{i}": "alive" for i in range(N)}
    with ProcessCluster(N, OPTIONS) as cluster:
        for node in cluster.live():
            node.call("wait_ready", timeout=15)
        cluster.wait_for("all alive", lambda: cluster.converged(everyone))
        duration = CYCLES * 9.0
        results: dict[str, Any] = {}

        def run(index: int) -> None:
            results[f"p{index}"] = cluster.node(index).call(
                "lifecycles", prefix=f"p{index}-", duration=duration, timeout=duration + 60
            )

        workers = [threading.Thread(target=run, args=(i,)) for i in range(N)]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        for _ in range(CYCLES):
            ids = list(range(N))
            rng.shuffle(ids)
            if rng.random() < 0.5:
                cluster.partition(ids[:1], ids[1:])
            else:
                cluster.partition(ids[:2], ids[2:])
            time.sleep(rng.uniform(3.0, 4.0))  # the fault lasts this long: time is the test
            cluster.heal()
            time.sleep(4.0)
        for worker in workers:
            worker.join(duration + 90)
        assert time.monotonic() - started < duration + 90
        cluster.wait_for("every node sees all alive", lambda: cluster.converged(everyone))
        allowed: dict[str, list[str | None]] = {}
        for result in results.values():
            allowed.update(result["allowed"])
        acked_deletes = sum(r["acked_deletes"] for r in results.values())
        assert acked_deletes > 100

        keys = sorted(allowed)
        reader = cluster.node(0)

        def settled() -> bool:
            got = reader.call("read_many", keys=keys, consistency="all")
            return not got["failures"] and all(got["values"][k] in allowed[k] for k in keys)

        cluster.wait_for("every key reads as its history allows", settled, timeout=30)
        collected = sum(n.call("stats")["storage"]["tombstones_collected"] for n in cluster.live())
        assert collected > 0
        for node in cluster.live():
            got = node.call("read_many", keys=keys)
            wrong = {k: v for k, v in got["values"].items() if v not in allowed[k]}
            assert wrong == {}, node.node_id
