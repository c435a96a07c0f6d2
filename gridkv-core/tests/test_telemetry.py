"""A node's OpenTelemetry instruments, read through the real SDK (an in-memory reader)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, cast

import pytest

pytest.importorskip("opentelemetry.sdk")

from gridkv import AsyncGridKV, ConfigError, GridKV
from gridkv.node.stats import OperationLatency
from gridkv.node.telemetry import DURATION_SAMPLE, LATENCY_WINDOW
from gridkv.security.identity import new_secret
from gridkv.testing.transports import node_options, transport_under_test
from gridkv.testing.waiting import wait_until
from opentelemetry.metrics import CallbackOptions
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

Point = tuple[dict[str, Any], float]


def points(reader: InMemoryMetricReader, name: str) -> list[Point]:
    """Every data point of the instrument ``name``: (attributes, value or histogram count)."""
    data = reader.get_metrics_data()
    found: list[Point] = []
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    # a number's value, or a histogram's count
                    figure = getattr(point, "value", None)
                    if figure is None:
                        figure = getattr(point, "count", 0)
                    found.append((dict(point.attributes or {}), cast(float, figure)))
    return found


def value(found: list[Point], **attributes: Any) -> float:
    """The sum of the points whose attributes include ``attributes`` (dots as ``__``)."""
    wanted = {k.replace("__", "."): v for k, v in attributes.items()}
    return sum(v for a, v in found if all(a.get(k) == w for k, w in wanted.items()))


def provider() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


async def test_operations_and_node_figures_are_observed_per_node() -> None:
    meters, reader = provider()
    secret: dict[str, Any] = {"auth": {"cluster_secret": new_secret()}}
    a = AsyncGridKV(meter_provider=meters, replica_count=2, **secret, **node_options("tel-a"))
    async with a:
        seeds = [a.stats().network.local_address]
        b = AsyncGridKV(
            meter_provider=meters,
            replica_count=2,
            seed_addrs=seeds,
            **secret,
            **node_options("tel-b"),
        )
        async with b:
            await b.wait_ready(timeout=10)
            for i in range(5):
                await a.set(f"k{i}", b"v" * 10)  # level one, here: the fast path
            await a.set("q", b"v", consistency="all")  # through the loop
            await a.delete("q", consistency="all")
            assert await a.get("k0") == b"v" * 10
            assert await a.get("missing") is None
            await wait_until(lambda: b.stats().storage.keys >= 5)

            ops = points(reader, "gridkv.operations")
            node_a = {"gridkv__node__id": "tel-a"}
            assert value(ops, **node_a, gridkv__operation="set", gridkv__path="local") == 5
            assert value(ops, **node_a, gridkv__operation="get", gridkv__path="local") == 0
            loop = {"gridkv__path": "loop", "gridkv__consistency": "all"}
            assert value(ops, **node_a, **loop, gridkv__operation="set") == 1
            assert value(ops, **node_a, **loop, gridkv__operation="delete") == 1
            assert value(ops, gridkv__node__id="tel-b") == 0  # b did nothing itself
            for i in range(DURATION_SAMPLE * 2):  # the durations of one in DURATION_SAMPLE
                await a.get(f"k{i % 5}", consistency="all")
            durations = points(reader, "gridkv.operation.duration")
            assert value(durations, **node_a, gridkv__operation="get") == 2

            members = points(reader, "gridkv.membership.members")
            for node in ("tel-a", "tel-b"):
                assert value(members, gridkv__node__id=node, gridkv__member__state="alive") == 2
            keys = points(reader, "gridkv.storage.keys")
            assert value(keys, gridkv__node__id="tel-b", gridkv__key__kind="value") >= 5
            assert value(points(reader, "gridkv.storage.memory.usage"), **node_a) > 0
            io = points(reader, "gridkv.network.io")
            assert value(io, **node_a, network__io__direction="transmit") > 0
            assert value(points(reader, "gridkv.replication.entries"), **node_a) >= 5
            lag = points(reader, "gridkv.replication.lag")
            assert value(lag, **node_a) >= 1  # batches to b, each with its lag
            await wait_until(lambda: a.node.membership.swim.probes > 0)  # type: ignore[attr-defined]
            probes = points(reader, "gridkv.membership.probes")
            assert value(probes, **node_a, gridkv__outcome="ok") > 0
            assert value(probes, **node_a, gridkv__outcome="failed") == 0


async def test_a_closed_node_is_no_longer_observed() -> None:
    meters, reader = provider()
    kv = AsyncGridKV(meter_provider=meters, **node_options("tel-closed"))
    async with kv:
        await kv.set("k", b"v")
        assert value(points(reader, "gridkv.operations"), gridkv__operation="set") == 1
    assert points(reader, "gridkv.storage.keys") == []


def test_without_an_sdk_the_instruments_cost_nothing_and_the_node_works() -> None:
    # The global provider is opentelemetry-api's no-op one here.
    with GridKV(**node_options("tel-none")) as kv:
        kv.set("k", b"v")
        assert kv.get("k") == b"v"
        assert kv.node.telemetry.fast.sets == 1


def test_asking_for_an_exporter_without_gridkv_metrics_names_the_distribution() -> None:
    from gridkv.plugins import Plugins

    plugins = Plugins(load_entry_points=False)  # as if gridkv-metrics were not installed
    with pytest.raises(ConfigError, match=r"metrics.prometheus_addr.*pip install gridkv-metrics"):
        GridKV(
            plugins=plugins,
            metrics={"prometheus_addr": "127.0.0.1:0"},
            local_node_id="tel-x",
            local_address="tel-x:7946",
            network={"type": "memory"},
        )
    with pytest.raises(ConfigError, match=r"metrics.otlp_endpoint.*http:// or https://"):
        GridKV(metrics={"otlp_endpoint": "collector:4318"}, **node_options("tel-y"))


async def test_the_stats_table_shows_the_key_figures_the_metrics_carry() -> None:
    kv = AsyncGridKV(replica_count=1, **node_options("tel-table"))
    async with kv:
        await kv.set("a", b"v")
        await kv.set("b", b"v", consistency="all")
        assert await kv.get("a") == b"v"  # the read fast path: not counted
        stats = kv.stats()
        assert stats.operations == {"set all ok": 1, "set one ok (local)": 1}
        assert type(stats.operations) is dict
        assert list(stats.latency) == ["set all ok"]  # one duration sampled, the first
        assert stats.latency["set all ok"].samples == 1
        table = stats.format_table()
        assert "operations.set.all.ok" in table
        assert "replication.backlog_bytes" in table
        (row,) = [line for line in table.splitlines() if line.startswith("latency.set.all.ok")]
        assert "p50 " in row and "p99 " in row and "(1 sampled)" in row
        as_dict = stats.to_dict()
        assert as_dict["replication"]["backlog_bytes"] == 0
        assert as_dict["latency"]["set all ok"]["samples"] == 1
        figures = kv.node.telemetry.status_figures()
        assert figures["operations"] == 2
        assert 0 < figures["latency_p50"] <= figures["latency_p99"]  # type: ignore[operator]


async def test_the_latency_window_keeps_the_latest_durations_of_each_kind() -> None:
    kv = AsyncGridKV(replica_count=1, **node_options("tel-window"))
    async with kv:
        telemetry = kv.node.telemetry
        assert telemetry.latency() == {}
        assert telemetry.status_figures() == {
            "operations": 0,
            "latency_p50": None,
            "latency_p99": None,
        }
        now = time.perf_counter()
        # Durations of 1 s, then as many of 1 ms as the window holds: only the latter stay.
        for took in (1.0, 0.001):
            for _ in range(LATENCY_WINDOW * DURATION_SAMPLE):
                telemetry.operation("get", "quorum", now - took, True)
        telemetry.operation("get", "quorum", now - 5.0, False)  # its own kind
        latency = telemetry.latency()
        window = latency["get quorum ok"]
        assert window.samples == LATENCY_WINDOW
        assert 0.001 <= window.p50 <= window.p99 < 0.5
        assert latency["get quorum error"].samples == 1
        assert latency["get quorum error"].p99 >= 5.0
        figures = telemetry.status_figures()  # successful operations only
        assert figures["latency_p99"] < 0.5  # type: ignore[operator]


def test_percentiles_are_nearest_rank() -> None:
    assert OperationLatency.of([0.003]) == OperationLatency(0.003, 0.003, 1)
    figures = OperationLatency.of([i / 1000 for i in range(100, 0, -1)])
    assert (figures.p50, figures.p99, figures.samples) == (0.05, 0.099, 100)


def test_gridkv_status_shows_operations_and_latency_when_members_report_them() -> None:
    from gridkv.service.status import operation_counts, status_table
    from rich.console import Console

    def shown(table: Any) -> str:
        console = Console(record=True, width=250)
        console.print(table)
        return console.export_text()

    member = {"node_id": "s1", "address": "s1:7946", "state": "alive", "ready": True}
    old = {"members": [dict(member)], "node_id": "s1", "ready": True}
    text = shown(status_table(old))
    assert "p50 / p99" not in text and "ops" not in text  # a member of an older version
    figures = {"operations": 1_000, "latency_p50": 0.0004, "latency_p99": 0.0123}
    status = {**old, "members": [{**member, **figures}]}
    text = shown(status_table(status))
    assert "400 us / 12.30 ms" in text and "1000" in text
    later = {**old, "members": [{**member, **figures, "operations": 3_000}]}
    text = shown(status_table(later, operation_counts(status), 2.0))
    assert "ops/s" in text and "1,000" in text  # (3,000 - 1,000) / 2 s


@pytest.mark.skipif(transport_under_test() != "tcp", reason="the direct path serves tcp")
def test_the_blocking_facades_direct_path_is_counted() -> None:
    meters, reader = provider()
    # One replica a key: b holds about half of them, and reads the others from a.
    secret: dict[str, Any] = {"auth": {"cluster_secret": new_secret()}, "replica_count": 1}
    with GridKV(meter_provider=meters, **secret, **node_options("tel-d1")) as a:
        seeds = [a.stats().network.local_address]
        with GridKV(
            meter_provider=meters, seed_addrs=seeds, **secret, **node_options("tel-d2")
        ) as b:
            b.wait_ready(timeout=10)
            table = b.node.ensure_table()
            remote = [
                k
                for k in (f"k{i}" for i in range(200))
                if b.node_id not in table.owners(table.partition_of(k))
            ][:5]
            assert len(remote) == 5
            for key in remote:
                b.set(key, b"v")
                assert b.get(key) == b"v"
            ops = points(reader, "gridkv.operations")
            direct = {"gridkv__node__id": "tel-d2", "gridkv__path": "direct"}
            assert value(ops, **direct, gridkv__operation="get") == len(remote)
            assert value(ops, **direct, gridkv__operation="set") == len(remote)
            operations = b.stats().operations
            assert operations["get one ok (direct)"] == len(remote)
            assert operations["set one ok (direct)"] == len(remote)


async def test_durations_are_sampled_per_kind_of_operation() -> None:
    # A get and a set in turns: a sample over all operations would keep only one kind.
    meters, reader = provider()
    kv = AsyncGridKV(meter_provider=meters, replica_count=1, **node_options("tel-sample"))
    async with kv:
        for i in range(DURATION_SAMPLE * 2):
            await kv.set(f"k{i}", b"v", consistency="all")
            await kv.get(f"k{i}", consistency="all")
        durations = points(reader, "gridkv.operation.duration")
        assert value(durations, gridkv__operation="get") == 2
        assert value(durations, gridkv__operation="set") == 2


async def test_writes_stored_here_by_the_checked_path_are_counted() -> None:
    meters, reader = provider()
    kv = AsyncGridKV(meter_provider=meters, replica_count=1, **node_options("tel-checked"))
    async with kv:
        await kv.set("a", b"v", consistency="one")  # the checked path, stored here
        await kv.set("b", b"v", ttl=timedelta(seconds=30))
        await kv.delete("a")
        ops = points(reader, "gridkv.operations")
        local = {"gridkv__path": "local", "gridkv__consistency": "one"}
        assert value(ops, **local, gridkv__operation="set") == 2
        assert value(ops, **local, gridkv__operation="delete") == 1


def test_suspicions_are_observed_by_origin() -> None:
    with GridKV(**node_options("tel-suspicions")) as kv:
        swim = kv.node.membership.swim  # type: ignore[attr-defined]
        swim.suspicions_raised, swim.suspicions_heard = 2, 5
        observed = list(
            kv.node.telemetry.observers()["gridkv.membership.suspicions"](CallbackOptions())
        )
        by_origin = {o.attributes["gridkv.suspicion.origin"]: o.value for o in observed}  # type: ignore[index]
        assert by_origin == {"local": 2, "remote": 5}


def test_probes_acknowledged_are_a_counter_that_never_goes_down() -> None:
    # "ok" once was probes sent minus failed: a probe in flight counted, then taken back.
    with GridKV(**node_options("tel-probes")) as kv:
        swim = kv.node.membership.swim  # type: ignore[attr-defined]
        swim.probes, swim.probes_acked, swim.probes_failed = 10, 6, 3
        observed = list(
            kv.node.telemetry.observers()["gridkv.membership.probes"](CallbackOptions())
        )
        by_outcome = {o.attributes["gridkv.outcome"]: o.value for o in observed}  # type: ignore[index]
        assert by_outcome == {"ok": 6, "failed": 3}


def test_an_export_interval_past_a_day_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"metrics.interval"):
        GridKV(metrics={"interval": "48h"}, **node_options("tel-interval"))


async def test_the_compression_ratio_is_estimated_from_the_stored_records() -> None:
    meters, reader = provider()
    kv = AsyncGridKV(
        meter_provider=meters,
        storage={"compression_threshold": 100},
        **node_options("tel-lz4"),
    )
    async with kv:
        assert points(reader, "gridkv.storage.compression.ratio") == []  # nothing compressed
        await kv.set("plain", b"short")
        await kv.set("big", b"abcd" * 1000, ttl=60)  # 4,000 bytes that compress well
        ratio = value(points(reader, "gridkv.storage.compression.ratio"))
        assert ratio > 10
