"""The Grafana dashboard asks for series the nodes export, with the labels they carry.

Two nodes replicate to each other and serve operations through their loops; every metric a
panel or variable of ``dashboard.json`` selects must be one of GridKV's instruments under its
Prometheus name, and where the scrape holds it, every label the query filters or groups by
must be on its samples.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gridkv_metrics")

from gridkv import GridKV
from gridkv.node.telemetry import _INSTRUMENTS
from gridkv.security.identity import new_secret
from gridkv_metrics.provider import NodeMeters
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard.json"
#: ``metric{matchers}``, and the matchers one by one.
SELECTOR = re.compile(r"\b([a-z_:][a-z0-9_:]*)\{([^}]*)\}")
#: A variable's query: its metric, matchers and the label whose values it lists.
LABEL_VALUES = re.compile(r"^label_values\(([a-z_:][a-z0-9_:]*)(?:\{([^}]*)\})?, ([a-z_]+)\)$")
MATCHER = re.compile(r'\s*([a-z_][a-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*(?:,|$)')
BY = re.compile(r"\bby \(([^)]*)\)")
#: Labels Prometheus adds when it scrapes, and the histogram's.
ADDED = {"job", "instance", "le"}


def node(node_id: str, **options: Any) -> GridKV:
    return GridKV(
        local_node_id=node_id,
        local_address=f"{node_id}:7946",
        network={"type": "memory"},
        metrics={"prometheus_addr": "127.0.0.1:0"},
        **options,
    )


def scrape(kv: GridKV) -> list[tuple[str, dict[str, str]]]:
    """Every sample of the node's /metrics: (name, labels)."""
    provider = kv.node._own_meters
    assert isinstance(provider, NodeMeters)
    address = provider.prometheus_address
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return [
        (sample.name, sample.labels)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def prometheus_names() -> set[str]:
    """Every instrument of a node under the name Prometheus shows it by."""
    units = {"By": "_bytes", "s": "_seconds"}
    names = set()
    for name, kind, unit, _ in _INSTRUMENTS:
        base = name.replace(".", "_") + units.get(unit, "")
        names.add(base + "_total" if kind == "counter" else base)
    for histogram in ("gridkv_operation_duration_seconds", "gridkv_replication_lag_seconds"):
        names |= {f"{histogram}_{part}" for part in ("bucket", "count", "sum")}
    return names


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    found += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def test_the_dashboard_asks_only_for_series_the_nodes_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    secret: dict[str, Any] = {"auth": {"cluster_secret": new_secret()}, "replica_count": 2}
    with node("d-a", **secret) as a, node("d-b", seed_addrs=["d-a:7946"], **secret) as b:
        b.wait_ready(timeout=10)
        for i in range(40):
            a.set(f"k{i}", b"v")  # replicated to b: lag recorded
            assert a.get(f"k{i}", consistency="all") == b"v"  # through the loop: timed
        samples = scrape(a)
    labels: dict[str, set[str]] = {}
    for name, sample_labels in samples:
        labels.setdefault(name, set()).update(sample_labels)
    known = prometheus_names()
    # The names derived above are the exporter's, for every instrument the scrape holds.
    assert {n for n in labels if n.startswith("gridkv_")} <= known
    assert "gridkv_replication_lag_seconds_bucket" in labels
    assert "gridkv_membership_suspicions_total" in labels

    for query in queries(dashboard):
        assert query.count("(") == query.count(")"), query
        assert query.count("{") == query.count("}"), query
        assert query.count('"') % 2 == 0, query
        grouped = {g.strip() for m in BY.finditer(query) for g in m.group(1).split(",")}
        selectors = SELECTOR.findall(query)
        listed = LABEL_VALUES.match(query)
        if listed:
            selectors = [(listed.group(1), listed.group(2) or "")]
            grouped.add(listed.group(3))
        assert selectors, query
        for metric, matchers in selectors:
            parsed = MATCHER.findall(matchers)
            assert len(parsed) == matchers.count('"') // 2, query  # each matcher well formed
            if metric == "target_info":
                continue
            assert metric in known, f"{metric} is no GridKV series: {query}"
            used = {m[0] for m in parsed} | grouped
            if metric in labels:  # some are exported only once they happen
                missing = used - labels[metric] - ADDED
                assert not missing, f"{metric} has no label {missing}: {query}"
