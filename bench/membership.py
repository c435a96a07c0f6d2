"""Failure detection and dissemination of the built-in SWIM membership, in simulation.

Whole clusters of real nodes (membership, codec, memory transport) run in one process on
virtual time (``gridkv.testing.Simulation``), with the default options unless noted. Every
figure is in simulated seconds, which is what a real cluster would see given the same message
delays (0.2 to 2 ms per message here); runs are seeded and repeat exactly.

* Crash detection: crash one node, time until every other member marks it dead; p50 and p99
  over many crashes, at N = 10 and N = 100. Target: p99 at most 2 s at N = 10 (memberlist's
  LAN defaults give roughly 6 to 26 s).
* False positives: a soak with 10% message loss and random 300 ms stalls of 10% of the
  nodes; how often a live member was declared dead. Target: 0.
* Dissemination: gossip rounds (``gossip_interval``) for one update to reach every member at
  N = 10, 100 and 1000, against ceil(log2 N). Target: at most 2x.
* Cost: messages and bytes sent per node per second in a steady cluster.

    python bench/membership.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from typing import Any

from _common import percentile, write
from gridkv.testing import Simulation, run_virtual


async def _cluster(sim: Simulation, n: int) -> None:
    first = await sim.add("n0", seeds=[])
    seed = [first.transport.local_address]
    batch = 50
    for start in range(1, n, batch):
        await asyncio.gather(
            *(sim.add(f"n{i}", seeds=seed) for i in range(start, min(n, start + batch)))
        )
    await sim.wait_until(sim.converged, timeout=600, step=0.25 if n > 200 else 0.05)


def detection(n: int, trials: int, seed: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with Simulation(seed=seed) as sim:
            await _cluster(sim, n)
            await sim.run_for(2)
            times: list[float] = []
            for trial in range(trials):
                victim = f"n{1 + (trial * 7) % (n - 1)}"
                await sim.run_for(sim.rng.uniform(0, 1))
                await sim.crash(victim)

                def dead_everywhere(v: str = victim) -> bool:
                    return sim.all_see(v, "dead")

                times.append(await sim.wait_until(dead_everywhere, timeout=60))
                await sim.restart(victim)
                await sim.wait_until(sim.converged, timeout=60)
                await sim.run_for(1)
            return {
                "n": n,
                "trials": trials,
                "p50_s": statistics.median(times),
                "p99_s": percentile(times, 99),
                "max_s": max(times),
                "false_deaths": len(sim.false_deaths()),
            }

    return dict(run_virtual(run()))


def soak(n: int, seconds: float, seed: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with Simulation(seed=seed, loss=0.10) as sim:
            await _cluster(sim, n)
            ids = list(sim.nodes)
            start = sim.now()
            stalls = 0
            while sim.now() - start < seconds:
                for node_id in sim.rng.sample(ids, max(1, n // 10)):
                    sim.stall(node_id, 0.3)
                    stalls += 1
                await sim.run_for(sim.rng.uniform(0.5, 1.5))
            return {
                "n": n,
                "seconds": seconds,
                "loss": 0.10,
                "stalls_300ms": stalls,
                "false_deaths": len(sim.false_deaths()),
                "converged_at_end": sim.converged(),
            }

    return dict(run_virtual(run()))


def dissemination(n: int, seed: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with Simulation(seed=seed) as sim:
            await _cluster(sim, n)
            await sim.run_for(3)
            interval = sim.nodes["n0"].options.gossip_interval
            source = sim.nodes["n0"].membership
            swim = source.swim  # type: ignore[attr-defined]
            # A fresh update: the source announces a new incarnation of itself.
            target_inc = swim.announce().incarnation
            others = [node for node in sim.live() if node.node_id != "n0"]

            def everyone_knows() -> bool:
                return all(
                    node.membership.swim.members["n0"].incarnation >= target_inc  # type: ignore[attr-defined]
                    for node in others
                )

            took = await sim.wait_until(everyone_knows, timeout=60, step=interval / 10)
            rounds = took / interval
            log2n = math.ceil(math.log2(n))
            return {
                "n": n,
                "seconds": took,
                "rounds": rounds,
                "log2n": log2n,
                "ratio": rounds / log2n,
            }

    return dict(run_virtual(run()))


def cost(n: int, seconds: float, seed: int) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with Simulation(seed=seed) as sim:
            await _cluster(sim, n)
            await sim.run_for(5)
            before = {k: v.transport.stats() for k, v in sim.nodes.items()}
            await sim.run_for(seconds)
            msgs = sum(
                v.transport.stats().messages_sent
                + v.transport.stats().requests_sent
                - before[k].messages_sent
                - before[k].requests_sent
                for k, v in sim.nodes.items()
            )
            sent = sum(
                v.transport.stats().bytes_sent - before[k].bytes_sent for k, v in sim.nodes.items()
            )
            return {
                "n": n,
                "messages_per_node_per_s": msgs / n / seconds,
                "bytes_per_node_per_s": sent / n / seconds,
            }

    return dict(run_virtual(run()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (no N = 1000)")
    args = parser.parse_args()
    wall = time.perf_counter()
    results: dict[str, Any] = {"detection": [], "soak": [], "dissemination": [], "cost": []}

    for n, trials in ((10, 40 if not args.quick else 15), (100, 20 if not args.quick else 5)):
        r = detection(n, trials, seed=n)
        results["detection"].append(r)
        print(
            f"crash detection N={n:<4} p50 {r['p50_s']:.2f}s  p99 {r['p99_s']:.2f}s  "
            f"max {r['max_s']:.2f}s  over {trials} crashes (target p99 <= 2s at N=10)"
        )

    r = soak(20, 60 if args.quick else 300, seed=1)
    results["soak"].append(r)
    print(
        f"soak N={r['n']} {r['seconds']:.0f}s, 10% loss, {r['stalls_300ms']} stalls of 300ms: "
        f"{r['false_deaths']} false deaths (target 0)"
    )

    for n in (10, 100) if args.quick else (10, 100, 1000):
        r = dissemination(n, seed=3)
        results["dissemination"].append(r)
        print(
            f"dissemination N={n:<5} {r['rounds']:.1f} rounds vs ceil(log2 N)={r['log2n']}: "
            f"{r['ratio']:.2f}x (target <= 2x)"
        )

    for n in (10, 100):
        r = cost(n, 10, seed=4)
        results["cost"].append(r)
        print(
            f"cost N={n:<4} {r['messages_per_node_per_s']:.1f} messages and "
            f"{r['bytes_per_node_per_s']:.0f} bytes per node per second"
        )

    path = write("membership", results)
    print(f"written to {path} in {time.perf_counter() - wall:.0f}s of wall time")


if __name__ == "__main__":
    main()
