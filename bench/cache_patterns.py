"""Issue 16's cluster figures: singleflight across 5 processes, and a hot key read everywhere.

**Singleflight.** Five node processes (TCP, a cluster secret, default options); in each round
every process starts 200 concurrent callers at the same wall-clock instant, 1,000 in all,
each missing the same fresh key. With ``get_or_set`` the loader (a 200 ms coroutine) must run
exactly once in the whole cluster, and every caller gets its value. The same run measures the
pattern without singleflight (``get``, load on a miss, ``set``), whose loads are the herd.

**Hot key.** Three node processes, ``replica_count`` 1, so one node (the owner) holds the
key; every process reads it ``--rate`` times a second for ``--seconds`` (paced in 10 ms
slices, as requests arrive), while a non-owner rewrites it every 100 ms (so the near caches
are invalidated ten times a second). Each process's CPU time over the window is taken, and
the owner's against the median node's: the target is at most 2x. Side by side in the same
run: the near cache (defaults), only the 1 s hot read cache (``near_cache_ttl`` 0), and no
cache at all (``hot_cache_size`` 0: every read of a non-owner crosses to the owner). How
many of the versions written each node read tells how fresh its reads were.

    python bench/cache_patterns.py [--rounds N] [--rate R] [--seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from _common import write
from gridkv.testing.cluster import ProcessCluster

CALLERS_PER_NODE = 200
LOADER_SECONDS = 0.2


def _ready(cluster: ProcessCluster, count: int, prefix: str) -> None:
    for node in cluster.live():
        node.call("wait_ready", timeout=30)
    everyone = {f"{prefix}{i}": "alive" for i in range(count)}
    cluster.wait_for("all alive", lambda: cluster.converged(everyone))


def _all_at_once(cluster: ProcessCluster, op: str, timeout: float, **args: Any) -> list[Any]:
    """Call ``op`` on every node at once (a thread each); their answers in node order."""
    nodes = list(cluster.live())
    answers: list[Any] = [None] * len(nodes)

    def one(i: int) -> None:
        answers[i] = nodes[i].call(op, timeout=timeout, **args)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def singleflight(rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"callers": 5 * CALLERS_PER_NODE, "loader_seconds": LOADER_SECONDS}
    with ProcessCluster(5, {}, prefix="s") as cluster:
        _ready(cluster, 5, "s")
        for naive in (False, True):
            results = []
            for round_ in range(rounds):
                key = f"{'naive' if naive else 'sf'}:{round_}"
                answers = _all_at_once(
                    cluster,
                    "singleflight",
                    60,
                    key=key,
                    callers=CALLERS_PER_NODE,
                    start_at=time.time() + 1.0,
                    loader_seconds=LOADER_SECONDS,
                    naive=naive,
                )
                values = sorted({v for a in answers for v in a["values"]})
                results.append({"loads": sum(a["loads"] for a in answers), "values": values})
            out["naive" if naive else "get_or_set"] = results
    return out


def _rewrite(writer: Any, key: str, stop: threading.Event, writes: list[int]) -> None:
    """Write ``key`` through ``writer`` every 100 ms until ``stop``."""
    while not stop.wait(0.1):
        writes[0] += 1
        writer.call("set", key=key, value=f"v{writes[0]}")


def hot_key(rate: int, seconds: float) -> dict[str, Any]:
    modes = [
        ("near cache (defaults)", {}),
        ("hot read cache only (near_cache_ttl 0)", {"near_cache_ttl": 0}),
        ("no cache (hot_cache_size 0)", {"hot_cache_size": 0}),
    ]
    out: list[dict[str, Any]] = []
    for label, extra in modes:
        with ProcessCluster(3, {"replica_count": 1, **extra}, prefix="h") as cluster:
            _ready(cluster, 3, "h")
            nodes = list(cluster.live())
            key = "hot:flag"
            owner_id = nodes[0].call("owners", key=key)[0]
            writer = next(n for n in nodes if n.node_id != owner_id)
            writer.call("set", key=key, value="v0")
            stop = threading.Event()
            writes = [0]
            thread = threading.Thread(target=_rewrite, args=(writer, key, stop, writes))
            thread.start()
            try:
                answers = _all_at_once(
                    cluster,
                    "hot_reads",
                    seconds + 60,
                    key=key,
                    rate=rate,
                    duration=seconds,
                    start_at=time.time() + 1.0,
                )
            finally:
                stop.set()
                thread.join()
            cpu = {n.node_id: a["cpu_seconds"] for n, a in zip(nodes, answers, strict=True)}
            median = statistics.median(cpu.values())
            out.append(
                {
                    "label": label,
                    "options": extra,
                    "owner": owner_id,
                    "cpu_seconds": cpu,
                    "reads": {n.node_id: a["reads"] for n, a in zip(nodes, answers, strict=True)},
                    # How many of the versions written each node saw: a cache that is told
                    # sees nearly all of them, one that waits for a TTL few.
                    "versions_seen": {
                        n.node_id: len(a["values"]) for n, a in zip(nodes, answers, strict=True)
                    },
                    "writes": writes[0],
                    "owner_over_median": cpu[owner_id] / median if median else float("inf"),
                }
            )
    return {"rate_per_node": rate, "seconds": seconds, "modes": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=4000, help="reads a second per node")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="one round, 2 s windows")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2.0
    sf = singleflight(args.rounds)
    print(f"singleflight: {sf['callers']} concurrent misses over 5 processes, per round")
    for name in ("get_or_set", "naive"):
        loads = [r["loads"] for r in sf[name]]
        values = [len(r["values"]) for r in sf[name]]
        print(f"  {name:<11} loader ran {loads} time(s); distinct values {values}")
    hot = hot_key(args.rate, args.seconds)
    print(
        f"hot key: {hot['rate_per_node']} reads/s on each of 3 processes for "
        f"{hot['seconds']:g}s, rewritten every 100 ms; CPU seconds (owner first)"
    )
    for mode in hot["modes"]:
        cpu = mode["cpu_seconds"]
        order = [mode["owner"], *sorted(n for n in cpu if n != mode["owner"])]
        shown = ", ".join(f"{n} {cpu[n]:.2f}" for n in order)
        seen = ", ".join(f"{n} {mode['versions_seen'][n]}" for n in order)
        print(f"  {mode['label']:<40} {shown}  owner/median {mode['owner_over_median']:.2f}x")
        print(f"  {'':<40} versions seen of {mode['writes'] + 1} written: {seen}")
    path = write("cache_patterns", {"singleflight": sf, "hot_key": hot})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
