"""GridKV against Redis, side by side in one run: one client thread, 100-byte values.

* Redis: a ``redis-server`` this script starts on a free loopback port (no persistence),
  read and written by redis-py with hiredis (``redis.Redis``) and by ``redis.asyncio``.
* GridKV: two nodes over TCP with peer authentication on (a cluster secret), the second in
  another process, ``replica_count`` 1 and no hot cache, so a key the other node owns is a
  network round trip each time. The blocking ``GridKV`` facade and the ``AsyncGridKV`` one
  (on the node's own loop, as redis.asyncio runs on it) read and write keys the other node
  owns (remote) and keys this node owns (local).

Each figure is the p50 and p99 of ``--ops`` sequential calls, after a warm-up, the calls of
every kind taking turns one by one; the ratio is GridKV's p50 over Redis's for the same
operation (issue 12: remote at most 1.0x, moonshot 0.7x).

The remote calls then take turns again twice with the processes pinned (all on one CPU; the
client on one and the servers on the other): unpinned, where the scheduler puts a woken
server decides a round trip's time on a VM, and the scheduler keeps redis-server on the
client's CPU more often than GridKV's node.

Then throughput: three processes of 64 tasks each doing a 90/10 get/set mix for
``--seconds``, redis.asyncio against the redis-server, and GridKV's 3-process cluster of
``bench/cluster_tcp.py`` with ``replica_count`` 2 and 3 (issue 12: at least 2.5x
redis.asyncio with 2), each with the replication backlog left at the end of its window.

Needs ``redis-server`` on the PATH (Debian: ``apt-get install redis-server``; ``nox -s
vs_redis`` installs it and redis-py with hiredis).

    python bench/vs_redis.py [--ops N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import redis
import redis.asyncio
from _common import percentile, server_process, write
from cluster_tcp import cluster_mix
from gridkv import AsyncGridKV, GridKV, Options
from gridkv.base.eventloop import run
from gridkv.security.identity import new_secret
from gridkv.testing.transports import free_port

VALUE = b"v" * 100
_F = TypeVar("_F")


def node_options(node_id: str, port: int, secret: str, seeds: list[str]) -> Options:
    """A node of the bench's cluster."""
    return Options.from_mapping(
        {
            "local_node_id": node_id,
            "local_address": f"127.0.0.1:{port}",
            "seed_addrs": seeds,
            "replica_count": 1,
            "hot_cache_size": 0,
            "network": {"type": "tcp"},
            "auth": {"cluster_secret": secret},
            "log": {"level": "error"},
        }
    )


async def serve(port: int, secret: str, seed: str) -> None:
    """The other node, until standard input closes."""
    async with AsyncGridKV(node_options("far", port, secret, [seed])) as kv:
        await kv.wait_ready(timeout=30)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """A redis-server on a free port, without persistence, for the block's length."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def percentiles(samples: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """p50 and p99 in microseconds of each name's samples (nanoseconds)."""
    return {
        name: {"p50_us": percentile(got, 50) / 1000, "p99_us": percentile(got, 99) / 1000}
        for name, got in samples.items()
    }


def turns(calls: dict[str, tuple[_F, list[str]]]) -> Iterator[tuple[str, _F, str]]:
    """``(name, call, key)`` for each call's next key in turn, as long as every call has one."""
    items = list(calls.items())
    for i in range(min(len(keys) for _, (_, keys) in items)):
        for name, (fn, keys) in items:
            yield name, fn, keys[i]


def interleaved(
    calls: dict[str, tuple[Callable[[str], object], list[str]]],
) -> dict[str, dict[str, float]]:
    """p50 and p99 in microseconds of each call over its keys, one call at a time.

    The calls take turns call by call, so each meets the machine in the same state: on a VM
    the latency of a call depends on what ran just before it (a vCPU that idled wakes
    slowly), by as much as 2x. (The local figures suffer from the company: bench/local_ops.py
    measures those.)
    """
    clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {name: [] for name in calls}
    for name, fn, key in turns(calls):
        start = clock()
        fn(key)
        samples[name].append(clock() - start)
    return percentiles(samples)


async def interleaved_async(
    calls: dict[str, tuple[Callable[[str], Awaitable[object]], list[str]]],
) -> dict[str, dict[str, float]]:
    """As :func:`interleaved`, for coroutine functions."""
    clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {name: [] for name in calls}
    for name, fn, key in turns(calls):
        start = clock()
        await fn(key)
        samples[name].append(clock() - start)
    return percentiles(samples)


def split_keys(kv: GridKV | AsyncGridKV, count: int) -> tuple[list[str], list[str]]:
    """``count`` keys the other node owns, and ``count`` this node owns."""
    table = kv.node.ensure_table()
    remote: list[str] = []
    local: list[str] = []
    i = 0
    while len(remote) < count or len(local) < count:
        key = f"key:{i:08d}"
        i += 1
        mine = table.owners(table.partition_of(key))[0] == kv.node_id
        (local if mine else remote).append(key)
    return remote[:count], local[:count]


def pin(pid: int, cpus: set[int]) -> None:
    """Let every thread of process ``pid`` run only on ``cpus``."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(thread), cpus)


def placed(
    calls: dict[str, tuple[Callable[[str], object], list[str]]], servers: list[int]
) -> dict[str, dict[str, dict[str, float]]]:
    """``calls`` taking turns again with the processes pinned: all on one CPU ("same cpu"),
    then this process on one CPU and the servers on another ("split"); {} on fewer than 2.

    Unpinned, where the scheduler puts a woken server decides a round trip's time on a VM:
    on the client's CPU it is about half what it is across CPUs, and the scheduler keeps
    some servers there more than others. Pinned, each figure has one placement.
    """
    everything = set(range(os.cpu_count() or 1))
    if len(everything) < 2 or not hasattr(os, "sched_setaffinity"):
        return {}
    out = {}
    try:
        for name, here, there in (("same cpu", {0}, {0}), ("split", {0}, {1})):
            pin(os.getpid(), here)
            for pid in servers:
                pin(pid, there)
            out[name] = interleaved(calls)
    finally:
        for pid in (os.getpid(), *servers):
            pin(pid, everything)
    return out


def blocking_figures(
    ops: int, redis_port: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float]]]]:
    """The blocking facade against redis-py, sequentially; then the remote calls pinned."""
    secret = new_secret()
    port, far_port = free_port(), free_port()
    seed = f"127.0.0.1:{port}"
    figures: dict[str, dict[str, float]] = {}
    near = GridKV(node_options("near", port, secret, []))
    with near as kv, server_process(__file__, "--serve", str(far_port), secret, seed) as far:
        kv.wait_ready(timeout=30)
        remote, local = split_keys(kv, ops)
        client = redis.Redis(port=redis_port)
        for key in remote[:500] + local[:500]:  # warm up: connections, code paths
            kv.set(key, VALUE)
            kv.get(key)
            client.set(key, VALUE)
            client.get(key)
        calls: dict[str, tuple[Callable[[str], object], list[str]]] = {
            "redis-py SET": (lambda k: client.set(k, VALUE), remote),
            "redis-py GET": (client.get, remote),
            "GridKV.set remote": (lambda k: kv.set(k, VALUE), remote),
            "GridKV.get remote": (kv.get, remote),
            "GridKV.set local": (lambda k: kv.set(k, VALUE), local),
            "GridKV.get local": (kv.get, local),
        }
        figures.update(interleaved(calls))
        assert kv.get(remote[-1]) == VALUE
        assert client.get(remote[-1]) == VALUE
        remote_calls = {name: call for name, call in calls.items() if "local" not in name}
        redis_pid = int(client.info("server")["process_id"])
        placements = placed(remote_calls, [far.pid, redis_pid])
        client.close()

        async def on_the_loop() -> dict[str, dict[str, float]]:
            # AsyncGridKV's calls are the node's own coroutines: run them on its loop,
            # with redis.asyncio on that same loop.
            aclient = redis.asyncio.Redis(port=redis_port)
            akv = AsyncGridKV.for_node(kv.node)
            for key in remote[:500]:
                await aclient.get(key)
                await akv.get(key)
            out = await interleaved_async(
                {
                    "redis.asyncio GET": (aclient.get, remote),
                    "AsyncGridKV.get remote": (akv.get, remote),
                },
            )
            await aclient.aclose()
            return out

        figures.update(kv._runner.submit(on_the_loop()).result(120))
    return figures, placements


LOAD_TASKS = 64
LOAD_KEYS = 10_000


async def redis_load(port: int, seconds: float, seed: int) -> dict[str, Any]:
    """The cluster benchmark's 90/10 mix from LOAD_TASKS redis.asyncio tasks, one process."""
    client = redis.asyncio.Redis(port=port, max_connections=LOAD_TASKS)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        rng = random.Random(f"{seed}-{n}")
        while loop.time() < deadline:
            key = f"load:{rng.randrange(LOAD_KEYS)}"
            if rng.random() < 0.9:
                await client.get(key)
            else:
                await client.set(key, VALUE)
            done += 1

    started = loop.time()
    await asyncio.gather(*(worker(n) for n in range(LOAD_TASKS)))
    elapsed = loop.time() - started
    await client.aclose()
    return {"ops": done, "seconds": elapsed}


def throughput(seconds: float, redis_port: int) -> dict[str, Any]:
    """3 processes x 64 tasks, 90/10: redis.asyncio against redis-server, and GridKV's
    3-process cluster (cluster_tcp.cluster_mix) with replica_count 2 and 3."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--redis-load", str(redis_port), str(seconds), str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    answers = [json.loads(p.communicate(timeout=seconds + 60)[0]) for p in procs]
    redis_ops = sum(a["ops"] for a in answers) / max(a["seconds"] for a in answers)
    out: dict[str, Any] = {"redis.asyncio": {"ops_per_s": redis_ops}}
    for count in (2, 3):
        mix = cluster_mix(seconds, f"replica_count {count}", {"replica_count": count})
        out[f"GridKV replica_count {count}"] = mix
    return out


def main() -> None:
    """Run the side by side, print it, write ``bench/results/vs_redis.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=5000, help="sequential calls per figure")
    parser.add_argument("--seconds", type=float, default=5.0, help="each throughput window")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--redis-load", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        port, secret, seed = args.serve
        run(serve(int(port), secret, seed))
        return
    if args.redis_load:
        port, seconds, seed = args.redis_load
        print(json.dumps(run(redis_load(int(port), float(seconds), int(seed)))))
        return
    with redis_server() as redis_port:
        figures, placements = blocking_figures(args.ops, redis_port)
        mixes = throughput(args.seconds, redis_port)
    pairs = {
        "GridKV.get remote": "redis-py GET",
        "GridKV.set remote": "redis-py SET",
        "GridKV.get local": "redis-py GET",
        "GridKV.set local": "redis-py SET",
        "AsyncGridKV.get remote": "redis.asyncio GET",
    }
    print(f"{'operation':<26}{'p50 us':>10}{'p99 us':>10}   vs")
    ratios: dict[str, float] = {}
    for name, fig in figures.items():
        base = pairs.get(name)
        ratio = ""
        if base is not None:
            ratios[name] = fig["p50_us"] / figures[base]["p50_us"]
            ratio = f"{ratios[name]:.2f}x {base}"
        print(f"{name:<26}{fig['p50_us']:>10.1f}{fig['p99_us']:>10.1f}   {ratio}")
    for placement, placed_figures in placements.items():
        print(f"pinned, {placement}:")
        for name, base in (
            ("GridKV.get remote", "redis-py GET"),
            ("GridKV.set remote", "redis-py SET"),
        ):
            ours, theirs = placed_figures[name]["p50_us"], placed_figures[base]["p50_us"]
            ratios[f"{name}, {placement}"] = ours / theirs
            print(f"  {name:<24}{ours:>10.1f}  {base} {theirs:.1f}  {ours / theirs:.2f}x")
    targets = {
        "remote get at most 1.0x redis-py": ratios["GridKV.get remote"] <= 1.0,
        "remote set at most 1.0x redis-py": ratios["GridKV.set remote"] <= 1.0,
        "async remote get at most 1.0x redis.asyncio": ratios["AsyncGridKV.get remote"] <= 1.0,
    }
    base = mixes["redis.asyncio"]["ops_per_s"]
    print("\n3 processes x 64 tasks, 90/10 get/set, 100 B:")
    print(f"  {'redis.asyncio + redis-server':<34}{base:>10,.0f} ops/s")
    for name, mix in mixes.items():
        if name == "redis.asyncio":
            continue
        ratios[f"{name} throughput"] = mix["ops_per_s"] / base
        print(
            f"  {name:<34}{mix['ops_per_s']:>10,.0f} ops/s  {mix['ops_per_s'] / base:.2f}x  "
            f"p99 {mix['p99_us']:,.0f} us  failures {mix['failures'] or 0}  "
            f"backlog at the end {mix['backlog_bytes']:,} B"
        )
    targets["throughput with replica_count 2 at least 2.5x redis.asyncio"] = (
        ratios["GridKV replica_count 2 throughput"] >= 2.5
    )
    for target, met in targets.items():
        print(f"  {'met ' if met else 'MISSED'}  {target}")
    data: dict[str, Any] = {"ops": args.ops, "figures": figures, "ratios": ratios}
    data["pinned"] = placements
    data["throughput"] = mixes
    data["targets_met"] = targets
    print(f"\nwritten to {write('vs_redis', data)}")


if __name__ == "__main__":
    main()
