"""get_many of 100 keys against 100 single gets, in the same run (issue 16: at least 5x).

Three nodes on one event loop (uvloop when installed) over the TCP transport on 127.0.0.1,
``replica_count`` 1 so two thirds of the keys live on another node, a cluster secret: the
reads cross real sockets with their authentication tags. A round is 100 single
``await kv.get(key)`` one after the other (what code without a bulk call does) and one
``await kv.get_many(keys)``, timed on the first node (a single get of another node's key may
come from the hot read cache of an earlier round; get_many always asks); the median of
``--rounds`` rounds of each, and their ratio. Also ``set_many`` against 100 single sets.

    python bench/bulk.py [--rounds N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from _common import write
from gridkv import AsyncGridKV
from gridkv.base.eventloop import loop_name, run
from gridkv.security.identity import new_secret
from gridkv.testing.transports import free_port

KEYS = 100
VALUE = b"v" * 100


async def _cluster() -> list[AsyncGridKV]:
    secret = new_secret()
    ports = [free_port() for _ in range(3)]
    nodes = [
        AsyncGridKV(
            local_node_id=f"bulk{i}",
            local_address=f"127.0.0.1:{port}",
            seed_addrs=[f"127.0.0.1:{ports[0]}"] if i else [],
            replica_count=1,
            network={"type": "tcp"},
            auth={"cluster_secret": secret},
            log={"level": "warning"},
        )
        for i, port in enumerate(ports)
    ]
    for kv in nodes:
        await kv.start()
    for kv in nodes:
        await kv.wait_ready(timeout=20)
    return nodes


async def _measure(rounds: int) -> dict[str, Any]:
    nodes = await _cluster()
    try:
        kv = nodes[0]
        keys = [f"bulk:{i}" for i in range(KEYS)]
        table = kv.node.table
        remote = sum(table.owners(table.partition_of(k))[0] != kv.node_id for k in keys)
        single_set, many_set, single_get, many_get = [], [], [], []
        for _ in range(rounds):
            started = time.perf_counter()
            for key in keys:
                await kv.set(key, VALUE)
            single_set.append(time.perf_counter() - started)
            started = time.perf_counter()
            errors = await kv.set_many(dict.fromkeys(keys, VALUE))
            many_set.append(time.perf_counter() - started)
            assert not errors
            started = time.perf_counter()
            for key in keys:
                assert await kv.get(key) == VALUE
            single_get.append(time.perf_counter() - started)
            started = time.perf_counter()
            got = await kv.get_many(keys)
            many_get.append(time.perf_counter() - started)
            assert len(got) == KEYS
        result: dict[str, Any] = {
            "keys": KEYS,
            "remote_keys": remote,
            "loop": loop_name(asyncio.get_running_loop()),
            "single_gets_ms": statistics.median(single_get) * 1000,
            "get_many_ms": statistics.median(many_get) * 1000,
            "single_sets_ms": statistics.median(single_set) * 1000,
            "set_many_ms": statistics.median(many_set) * 1000,
        }
        result["get_ratio"] = result["single_gets_ms"] / result["get_many_ms"]
        result["set_ratio"] = result["single_sets_ms"] / result["set_many_ms"]
        return result
    finally:
        for node in nodes:
            await node.close()


def main() -> None:
    """Run the benchmark, print the figures, write ``bench/results/bulk.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds of each (30)")
    parser.add_argument("--quick", action="store_true", help="5 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 5
    result = run(_measure(args.rounds))
    print(
        f"3 nodes over TCP on one {result['loop']} loop, replica_count 1, {KEYS} keys of "
        f"{len(VALUE)} B ({result['remote_keys']} on other nodes); median of {args.rounds} rounds"
    )
    print(f"  100 single gets  {result['single_gets_ms']:8.2f} ms")
    print(f"  get_many         {result['get_many_ms']:8.2f} ms   {result['get_ratio']:.1f}x faster")
    print(f"  100 single sets  {result['single_sets_ms']:8.2f} ms")
    print(f"  set_many         {result['set_many_ms']:8.2f} ms   {result['set_ratio']:.1f}x faster")
    met = "met" if result["get_ratio"] >= 5 else "MISSED"
    print(f"  {met}  get_many at least 5x 100 single gets: {result['get_ratio']:.1f}x")
    print(f"written to {write('bulk', result)}")


if __name__ == "__main__":
    main()
