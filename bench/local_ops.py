"""Embedded get and set on an owned key, sync and async, against a dict and cachetools.

Every figure is the time of one operation: each round times a pass over 1,000 keys and
divides by the number of calls (sets go through a one-line lambda, which adds about 40 ns);
the table shows the median and p99 over the rounds. The baselines run in the same process,
through the same loop, in the same run.

Targets: sync get at most 1 us median and at most 15x a dict lookup, async get at most 2 us
median (issue 2); sync get at most 10x a dict lookup, sync set at most 2 us (issue 12).

    python bench/local_ops.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable

import cachetools
import gridkv
from _common import summary, write
from gridkv.transport import MemoryNetwork, MemoryTransport

KEYS = [f"user:{i:011d}" for i in range(1000)]
VALUE = b"v" * 32


def time_sync(fn: Callable[[str], object], rounds: int) -> list[float]:
    """Per-call nanoseconds of ``fn(key)`` over the keys, one sample per round."""
    samples = []
    keys = KEYS
    perf = time.perf_counter_ns
    for _ in range(rounds):
        start = perf()
        for k in keys:
            fn(k)
        samples.append((perf() - start) / len(keys))
    return samples


async def time_async(fn: Callable[[str], Awaitable[object]], rounds: int) -> list[float]:
    """Per-call nanoseconds of ``await fn(key)``, one sample per round."""
    samples = []
    keys = KEYS
    perf = time.perf_counter_ns
    for _ in range(rounds):
        start = perf()
        for k in keys:
            await fn(k)
        samples.append((perf() - start) / len(keys))
    return samples


def node_options(name: str) -> gridkv.Options:
    return gridkv.Options.from_mapping({"local_node_id": name, "log": {"level": "warning"}})


async def measure_async(rounds: int) -> dict[str, list[float]]:
    transport = MemoryTransport("bench-async:1", MemoryNetwork())
    async with gridkv.AsyncGridKV(node_options("bench-async"), transport=transport) as kv:
        for k in KEYS:
            await kv.set(k, VALUE)
        await time_async(kv.get, 20)  # warm up
        return {
            "async get": await time_async(kv.get, rounds),
            "async set": await time_async(lambda k: kv.set(k, VALUE), max(10, rounds // 10)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    rounds = args.rounds
    gc.collect()

    baseline = {k: VALUE for k in KEYS}
    ttl_cache: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(maxsize=10_000, ttl=3600)
    for k in KEYS:
        ttl_cache[k] = VALUE

    transport = MemoryTransport("bench-sync:1", MemoryNetwork())
    with gridkv.GridKV(node_options("bench-sync"), transport=transport) as kv:
        for k in KEYS:
            kv.set(k, VALUE)
        assert kv.get(KEYS[0]) == VALUE
        time_sync(kv.get, 20)  # warm up
        results: dict[str, list[float]] = {
            "dict lookup": time_sync(baseline.get, rounds),
            "cachetools.TTLCache get": time_sync(ttl_cache.get, rounds),
            "sync get": time_sync(kv.get, rounds),
            "sync set": time_sync(lambda k: kv.set(k, VALUE), max(10, rounds // 10)),
        }
    results.update(asyncio.run(measure_async(rounds)))

    figures = {name: summary(samples) for name, samples in results.items()}
    dict_ns = figures["dict lookup"]["median_ns"]
    ttl_ns = figures["cachetools.TTLCache get"]["median_ns"]
    print(f"{'operation':<26}{'median':>12}{'p99':>12}{'x dict':>10}{'x TTLCache':>12}")
    for name, fig in figures.items():
        print(
            f"{name:<26}{fig['median_ns']:>10.0f}ns{fig['p99_ns']:>10.0f}ns"
            f"{fig['median_ns'] / dict_ns:>10.1f}{fig['median_ns'] / ttl_ns:>12.2f}"
        )
    sync_get = figures["sync get"]["median_ns"]
    async_get = figures["async get"]["median_ns"]
    sync_set = figures["sync set"]["median_ns"]
    targets = {
        "sync get median <= 1000 ns": sync_get <= 1000,
        "sync get <= 15x dict lookup": sync_get / dict_ns <= 15,
        "async get median <= 2000 ns": async_get <= 2000,
        "sync get <= 10x dict lookup": sync_get / dict_ns <= 10,
        "sync set median <= 2000 ns": sync_set <= 2000,
    }
    print()
    print(f"sync get / dict lookup:  {sync_get / dict_ns:.1f}x (targets at most 15x, 10x)")
    print(f"sync get median:         {sync_get:.0f} ns (target at most 1000 ns)")
    print(f"async get median:        {async_get:.0f} ns (target at most 2000 ns)")
    print(f"sync set median:         {sync_set:.0f} ns (target at most 2000 ns)")
    for target, met in targets.items():
        print(f"  {'met ' if met else 'MISSED'}  {target}")
    path = write(
        "local_ops",
        {
            "rounds": rounds,
            "keys": len(KEYS),
            "value_bytes": len(VALUE),
            "figures": figures,
            "ratios": {
                "sync_get_over_dict": sync_get / dict_ns,
                "async_get_over_dict": async_get / dict_ns,
                "sync_get_over_ttlcache": sync_get / ttl_ns,
            },
            "targets_met": targets,
        },
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
