"""Metrics on against off: what exporting a node's metrics costs, in the same run.

* Local operations: a node with ``metrics.prometheus_addr`` set (gridkv-metrics' provider, a
  Prometheus reader, scraped every second meanwhile) against a node without, taking turns:
  median ns of a local ``get`` and ``set``. Target: get within 1.1x.
* The 3-process 90/10 cluster workload of ``bench/cluster_tcp.py`` (``replica_count`` 1, hot
  cache off, so two thirds of the operations go through the loop, where they are counted and
  timed), with every node exporting and scraped every 2 s, against none, in six turns (each
  side first every other turn); the figure is the median of the turns' paired ratios.
  Target: at least 0.95x the throughput.

    python bench/metrics.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import urllib.request
from collections.abc import Callable
from functools import partial
from typing import Any

import gridkv
from _common import write
from cluster_tcp import cluster_mix
from gridkv.testing.cluster import ProcessCluster
from local_ops import KEYS, VALUE, time_sync

#: Seconds between scrapes of every node during the cluster workload (Prometheus scrapes every
#: 15 s to a minute by default: this is harsher).
SCRAPE_PERIOD = 2.0


class Scraper:
    """Scrapes ``addresses`` every ``period`` seconds until stopped."""

    def __init__(self, addresses: list[str], period: float = 1.0) -> None:
        self.addresses = addresses
        self.period = period
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for address in self.addresses:
                with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
                    answer.read()
                self.scrapes += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def local(rounds: int, turns: int) -> dict[str, Any]:
    """Local get and set, metrics off and on, in turns; medians of the turns' medians."""
    samples: dict[str, list[float]] = {}
    common: dict[str, Any] = {"network": {"type": "memory"}, "log": {"level": "error"}}
    exporting: dict[str, Any] = {"metrics": {"prometheus_addr": "127.0.0.1:0"}}
    with (
        gridkv.GridKV(local_node_id="off", local_address="off:7946", **common) as off,
        gridkv.GridKV(local_node_id="on", local_address="on:7946", **exporting, **common) as on,
    ):
        address = getattr(on.node._own_meters, "prometheus_address", "")
        scraper = Scraper([address])
        for kv in (off, on):
            for k in KEYS:
                kv.set(k, VALUE)
            time_sync(kv.get, 20)
        for _ in range(turns):
            for name, kv in (("off", off), ("on", on)):
                get = statistics.median(time_sync(kv.get, rounds))
                setter: Callable[[str], object] = partial(kv.set, value=VALUE)
                set_ = statistics.median(time_sync(setter, rounds // 10))
                samples.setdefault(f"get {name}", []).append(get)
                samples.setdefault(f"set {name}", []).append(set_)
        scraper.stop()
    figures = {name: statistics.median(values) for name, values in samples.items()}
    figures["get on/off"] = figures["get on"] / figures["get off"]
    figures["set on/off"] = figures["set on"] / figures["set off"]
    figures["scrapes"] = scraper.scrapes
    return figures


def scraping(cluster: ProcessCluster) -> Callable[[], None]:
    addresses = [node.call("metrics_address") for node in cluster.live()]
    scraper = Scraper([a for a in addresses if a], SCRAPE_PERIOD)
    return scraper.stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows")
    args = parser.parse_args()
    rounds, turns, seconds = (100, 3, 3.0) if args.quick else (300, 7, 5.0)
    data: dict[str, Any] = {"local": local(rounds, turns)}
    fig = data["local"]
    for op in ("get", "set"):
        off_ns, on_ns, ratio_ = fig[f"{op} off"], fig[f"{op} on"], fig[f"{op} on/off"]
        print(f"local {op}: off {off_ns:.0f} ns, on {on_ns:.0f} ns ({ratio_:.3f}x)")
    base: dict[str, Any] = {"replica_count": 1, "hot_cache_size": 0, "network": {"type": "tcp"}}
    runs: dict[str, list[float]] = {"off": [], "on": []}
    exported = {**base, "metrics": {"prometheus_addr": "127.0.0.1:0"}}
    for turn in range(1 if args.quick else 6):
        # In turns, and each side first every other turn: the machine's slow moments (this
        # workload varies by a third from run to run) hit both sides alike.
        order = ("off", "on") if turn % 2 == 0 else ("on", "off")
        for side in order:
            if side == "off":
                result = cluster_mix(seconds, "metrics off", base)
            else:
                result = cluster_mix(seconds, "metrics on", exported, during=scraping)
            runs[side].append(result["ops_per_s"])
        print(f"cluster 90/10: off {runs['off'][-1]:.0f} ops/s, on {runs['on'][-1]:.0f} ops/s")
    # The turns' ratios, paired: on against the off run next to it.
    ratio = statistics.median(on / off for on, off in zip(runs["on"], runs["off"], strict=True))
    data["cluster"] = {**runs, "ratio": ratio}
    data["targets_met"] = {
        "local get within 1.1x": fig["get on/off"] <= 1.1,
        "cluster throughput at least 0.95x": ratio >= 0.95,
    }
    print(f"cluster throughput on/off: {ratio:.3f}x")
    print(f"targets met: {data['targets_met']}")
    print(f"wrote {write('metrics', data)}")


if __name__ == "__main__":
    main()
