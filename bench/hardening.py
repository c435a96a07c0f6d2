"""Big values under failures, over TCP processes: availability, membership, convergence.

* Mixed load with big values: 5 node processes (replica_count 3), 16 tasks in each running a
  50/50 get/set mix at ``quorum`` on 2,000 keys, for ``--seconds``; a third of the way in one
  node is killed (``kill -9``) and restarted four seconds later. Run twice in the same
  invocation: with 30% of the sets writing incompressible values of 100 KB to 1 MB, and the
  baseline with small values only. Figures: availability (operations that succeeded, on the
  nodes that were not killed), the time membership takes to settle after the restart (every
  node sees all five alive), false deaths (a live node declared dead), and lines in the nodes'
  logs saying an exception was never retrieved.
* Convergence after a heal: 3 node processes; one is cut off (``ProcessCluster.partition``)
  while 1,000 incompressible values of 1 MB are written at ``quorum`` through another; then the
  network heals, and the time until the cut-off node holds all 1,000 is measured.

    python bench/hardening.py [--seconds S] [--quick]

Writes ``bench/results/hardening.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import write
from gridkv.testing.cluster import NodeProcessError, ProcessCluster

N = 5
NODE_OPTIONS: dict[str, Any] = {
    "replica_count": 3,
    "max_value_bytes": 2 * 1024 * 1024,
    "storage": {"max_memory_mb": 8192, "eviction": "lru"},
    "log": {"level": "warning", "format": "text"},
}
TROUBLE = "never retrieved"


def mixed_load(label: str, big_ratio: float, seconds: float) -> dict[str, Any]:
    everyone = {f"h{i}": "alive" for i in range(N)}
    with tempfile.TemporaryDirectory(prefix="gridkv-bench-") as logs:
        log_dir = Path(logs)
        with ProcessCluster(N, NODE_OPTIONS, prefix="h", log_dir=log_dir) as cluster:
            for node in cluster.live():
                node.call("wait_ready", timeout=30)
            cluster.wait_for("all alive", lambda: cluster.converged(everyone), timeout=30)
            results: dict[int, Any] = {}

            def load(index: int) -> None:
                try:
                    results[index] = cluster.node(index).call(
                        "load",
                        timeout=seconds + 120,
                        duration=seconds,
                        tasks=16,
                        keys=2000,
                        read_ratio=0.5,
                        consistency="quorum",
                        big_ratio=big_ratio,
                        seed=index,
                    )
                except NodeProcessError:
                    results[index] = None  # the node that was killed

            threads = [threading.Thread(target=load, args=(i,)) for i in range(N)]
            start = time.monotonic()
            for thread in threads:
                thread.start()
            victim = N - 1
            time.sleep(seconds / 3)  # the schedule of the fault is the benchmark
            killed_at = cluster.kill(victim)
            time.sleep(4.0)
            cluster.restart(victim)
            restarted = time.monotonic()
            cluster.wait_for(
                "all alive after the restart",
                lambda: cluster.converged(everyone),
                timeout=120,
                interval=0.05,
            )
            settle = time.monotonic() - restarted
            for thread in threads:
                thread.join(seconds + 180)
            wall = time.monotonic() - start
            false_deaths = 0
            for node in cluster.live():
                for when, member, _, new in node.call("changes"):
                    if new == "dead" and not (
                        member == f"h{victim}" and killed_at <= when <= killed_at + 10
                    ):
                        false_deaths += 1
        trouble = sum(
            path.read_text(errors="replace").count(TROUBLE) for path in log_dir.glob("*.log")
        )
    done = sum(sum(r["counts"].values()) for r in results.values() if r)
    failed = sum(sum(r["failures"].values()) for r in results.values() if r)
    errors: dict[str, int] = {}
    for r in results.values():
        for name, n in (r or {}).get("failures", {}).items():
            errors[name] = errors.get(name, 0) + n
    figures = {
        "label": label,
        "big_ratio": big_ratio,
        "seconds": wall,
        "operations": done + failed,
        "succeeded": done,
        "availability": done / max(1, done + failed),
        "errors": errors,
        "settle_after_restart_s": settle,
        "false_deaths": false_deaths,
        "never_retrieved_lines": trouble,
    }
    print(
        f"{label:<28} ops {done + failed:>7}  availability {figures['availability']:.4f}  "
        f"settle {settle:5.2f} s  false deaths {false_deaths}  never-retrieved {trouble}  "
        f"errors {errors}"
    )
    return figures


def convergence(count: int, size: int) -> dict[str, Any]:
    with ProcessCluster(3, NODE_OPTIONS, prefix="v") as cluster:
        for node in cluster.live():
            node.call("wait_ready", timeout=30)
        everyone = {f"v{i}": "alive" for i in range(3)}
        cluster.wait_for("all alive", lambda: cluster.converged(everyone), timeout=30)
        cluster.partition([2], [0, 1])
        written = cluster.node(0).call(
            "set_random", timeout=600, prefix="mb", count=count, size=size, consistency="quorum"
        )
        cluster.heal()
        healed = time.monotonic()

        def caught_up() -> bool:
            return not cluster.node(2).call("local_missing", prefix="mb", count=count)["missing"]

        cluster.wait_for("the cut-off node holds every value", caught_up, timeout=600)
        took = time.monotonic() - healed
    figures = {
        "values": count,
        "value_bytes": size,
        "written": written["written"],
        "seconds_after_heal": took,
        "mb_per_s": count * size / took / 1e6,
    }
    print(
        f"convergence: {count} x {size // 1000} KB held by the cut-off node {took:.2f} s "
        f"after the heal ({figures['mb_per_s']:.0f} MB/s)"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="shorter runs, 200 values")
    args = parser.parse_args()
    seconds = 12.0 if args.quick else args.seconds
    small = mixed_load("small values only", 0.0, seconds)
    big = mixed_load("30% values 100 KB-1 MB", 0.3, seconds)
    conv = convergence(200 if args.quick else 1000, 1_000_000)
    print(
        f"availability with big values {big['availability']:.4f} vs "
        f"{small['availability']:.4f} small-only; settle {big['settle_after_restart_s']:.2f} s"
        f" vs {small['settle_after_restart_s']:.2f} s"
    )
    path = write("hardening", {"small": small, "big": big, "convergence": conv})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
