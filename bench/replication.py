"""Replication: batching, lag, and convergence after a partition heals.

* Throughput: 20,000 writes at ``one`` on one node of a 3-node cluster (replica_count 3, one
  process, memory transport, real event loop), timed until every replica holds every key;
  with the default batching against ``batch_threshold = 1`` in the same run. Target: at least
  5x.
* Lag: from a write's acknowledgement until it is visible on every replica, p50 and p99 over
  500 writes, with the default ``batch_window``.
* Convergence: 100,000 keys written while one replica is cut off (simulated cluster, default
  1024 partitions), then the partition heals; time and anti-entropy intervals until the
  replicas' digests agree, and bytes sent per differing key. Target: within 3 intervals.

    python bench/replication.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import gridkv
from _common import percentile, write
from gridkv.testing import Simulation, run_virtual
from gridkv.transport import MemoryNetwork, MemoryTransport

WRITES = 20_000


async def _cluster(net: MemoryNetwork, **overrides: Any) -> list[gridkv.AsyncGridKV]:
    nodes = []
    for i in range(3):
        options = gridkv.Options.from_mapping(
            {
                "local_node_id": f"r{i}",
                "local_address": f"r{i}:1",
                "seed_addrs": ["r0:1"] if i else [],
                "disable_auth": True,
                "log": {"level": "warning"},
                **overrides,
            }
        )
        kv = gridkv.AsyncGridKV(options, transport=MemoryTransport(f"r{i}:1", net))
        await kv.start()
        nodes.append(kv)
    for kv in nodes:
        await kv.wait_ready(10)
    while any(kv.stats().cluster.healthy_nodes < 3 for kv in nodes):
        await asyncio.sleep(0.01)
    return nodes


def _held(kv: gridkv.AsyncGridKV) -> int:
    return kv.stats().storage.keys


async def throughput(batch_threshold: int) -> dict[str, float]:
    nodes = await _cluster(MemoryNetwork(), batch_threshold=batch_threshold)
    try:
        writer = nodes[0]
        start = time.perf_counter()
        for i in range(WRITES):
            await writer.set(f"t:{i}", b"v" * 32)
            if i % 256 == 0:
                await asyncio.sleep(0)  # let the sends go out, as a real program would
        while any(_held(kv) < WRITES for kv in nodes):
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
        return {
            "batch_threshold": batch_threshold,
            "seconds": elapsed,
            "writes_per_s": WRITES / elapsed,
            "batches": writer.node.coordinator.batches_sent,
        }
    finally:
        for kv in nodes:
            await kv.close()


async def lag() -> dict[str, float]:
    nodes = await _cluster(MemoryNetwork())
    try:
        samples = []
        for i in range(500):
            key = f"lag:{i}"
            await nodes[0].set(key, b"v")
            acked = time.perf_counter()
            partition = nodes[0].node.table.partition_of(key)
            while any(kv.node.storage.get(partition, key) is None for kv in nodes[1:]):
                await asyncio.sleep(0.0002)
            samples.append(time.perf_counter() - acked)
        return {
            "p50_ms": statistics.median(samples) * 1000,
            "p99_ms": percentile(samples, 99) * 1000,
            "batch_window_ms": nodes[0].options.batch_window * 1000,
        }
    finally:
        for kv in nodes:
            await kv.close()


def convergence(keys: int = 100_000) -> dict[str, float]:
    async def run() -> dict[str, float]:
        async with Simulation(seed=40, options={"partition_count": 1024}) as sim:
            await sim.start(3)
            await sim.wait_until(sim.converged, timeout=10)
            sim.partition(["n2"], ["n0", "n1"])
            kv = sim.client("n0")
            for i in range(keys):
                await kv.set(f"key:{i:08d}", b"v" * 32)
            await sim.run_for(3)  # the batches to n2 time out and are dropped
            before = sum(n.transport.stats().bytes_sent for n in sim.live())
            sim.heal()
            parts = range(1024)

            def same() -> bool:
                return all(
                    len({sim.nodes[n].storage.digest(p) for n in sim.nodes}) == 1 for p in parts
                )

            took = await sim.wait_until(same, timeout=3600, step=0.05)
            sent = sum(n.transport.stats().bytes_sent for n in sim.live()) - before
            interval = sim.nodes["n0"].options.anti_entropy_interval
            return {
                "keys": keys,
                "seconds": took,
                "intervals": took / interval,
                "bytes_per_key": sent / keys,
            }

    return dict(run_virtual(run()))


def main() -> None:
    batched = asyncio.run(throughput(gridkv.Options().batch_threshold))
    single = asyncio.run(throughput(1))
    ratio = batched["writes_per_s"] / single["writes_per_s"]
    print(
        f"throughput, batching (threshold {batched['batch_threshold']}): "
        f"{batched['writes_per_s']:.0f} writes/s in {batched['batches']:.0f} batches"
    )
    print(f"throughput, batch_threshold = 1: {single['writes_per_s']:.0f} writes/s")
    print(f"  ratio {ratio:.1f}x (target at least 5x) {'met' if ratio >= 5 else 'MISSED'}")
    lags = asyncio.run(lag())
    print(
        f"replication lag ack -> all replicas: p50 {lags['p50_ms']:.2f} ms, "
        f"p99 {lags['p99_ms']:.2f} ms (batch_window {lags['batch_window_ms']:.0f} ms)"
    )
    conv = convergence()
    print(
        f"convergence after a heal with {conv['keys']} differing keys: {conv['seconds']:.1f}s "
        f"= {conv['intervals']:.1f} anti-entropy intervals (target <= 3) "
        f"{'met' if conv['intervals'] <= 3 else 'MISSED'}; {conv['bytes_per_key']:.0f} bytes "
        "per differing key"
    )
    path = write(
        "replication",
        {"batched": batched, "unbatched": single, "ratio": ratio, "lag": lags, "convergence": conv},
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
