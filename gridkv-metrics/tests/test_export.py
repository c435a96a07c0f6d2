"""gridkv-metrics for real: an HTTP scrape of /metrics parsed with prometheus_client's parser,
an OTLP export received over HTTP and decoded with the OTLP protobuf classes, and exporters
that fail without the node noticing."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

pytest.importorskip("gridkv_metrics")

from gridkv import ConfigError, GridKV, PeerUnavailable
from gridkv.node.telemetry import DURATION_SAMPLE, NodeTelemetry
from gridkv_metrics.provider import NodeMeters, _version
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node(node_id: str, options: dict[str, Any] | None = None, **metrics: Any) -> GridKV:
    """A memory node with the ``metrics`` options given, and further ``options``."""
    return GridKV(
        local_node_id=node_id,
        local_address=f"{node_id}:7946",
        network={"type": "memory"},
        metrics=metrics,
        **(options or {}),
    )


def scrape(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of http://address/metrics: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def meters(kv: GridKV) -> NodeMeters:
    provider = kv.node._own_meters
    assert isinstance(provider, NodeMeters)
    return provider


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def series(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Every sample of ``name``, keyed by the values of ``labels`` (each series once)."""
    found: dict[tuple[str, ...], float] = {}
    for (n, ls), v in samples.items():
        if n == name:
            key = tuple(dict(ls)[label] for label in labels)
            assert key not in found, f"{name}: two series with {labels} = {key}"
            found[key] = v
    return found


OPERATION = ("gridkv_operation", "gridkv_consistency", "gridkv_outcome", "gridkv_path")


def test_a_scrape_shows_exactly_the_operations_done_each_node_its_own() -> None:
    one_replica = {"replica_count": 1}
    with (
        node("m-a", one_replica, prometheus_addr="127.0.0.1:0") as a,
        node("m-b", one_replica, prometheus_addr="127.0.0.1:0") as b,
    ):
        for i in range(7):
            a.set(f"k{i}", b"v")  # the fast path: local
        a.delete("k0")  # local, not the loop
        for i in range(5):  # through the loop, each counted (k0 deleted: still ok)
            assert a.get(f"k{i}", consistency="quorum") == (b"v" if i else None)
        for _ in range(DURATION_SAMPLE + 1):
            assert a.get("missing", consistency="all") is None
        a.set("q", b"v", consistency="all")
        a.delete("q", consistency="all")
        for _ in range(3):
            assert a.get("k1") == b"v"  # the read fast path: not counted
        b.set("x", b"y")

        samples = scrape(meters(a).prometheus_address)
        assert {
            dict(ls)["gridkv_node_id"] for (n, ls) in samples if n == "gridkv_operations_total"
        } == {"m-a"}
        assert series(samples, "gridkv_operations_total", *OPERATION) == {
            ("set", "one", "ok", "local"): 7,
            ("delete", "one", "ok", "local"): 1,
            ("get", "quorum", "ok", "loop"): 5,
            ("get", "all", "ok", "loop"): DURATION_SAMPLE + 1,
            ("set", "all", "ok", "loop"): 1,
            ("delete", "all", "ok", "loop"): 1,
        }
        # One duration in DURATION_SAMPLE of each kind, the first among them.
        assert series(samples, "gridkv_operation_duration_seconds_count", *OPERATION[:3]) == {
            ("get", "quorum", "ok"): 1,
            ("get", "all", "ok"): 2,
            ("set", "all", "ok"): 1,
            ("delete", "all", "ok"): 1,
        }
        assert total(samples, "gridkv_storage_keys", gridkv_key_kind="value") == 6
        assert total(samples, "gridkv_storage_keys", gridkv_key_kind="tombstone") == 2
        assert {
            dict(ls)["gridkv_node_id"] for (n, ls) in samples if n == "gridkv_storage_keys"
        } == {"m-a"}

        other = scrape(meters(b).prometheus_address)
        assert series(other, "gridkv_operations_total", *OPERATION) == {
            ("set", "one", "ok", "local"): 1,
            ("delete", "one", "ok", "local"): 0,
        }
        assert series(other, "gridkv_operation_duration_seconds_count", *OPERATION[:3]) == {}
    # closed: the endpoint is gone
    with pytest.raises(OSError, match="Connection refused"):
        scrape(meters(a).prometheus_address)


def target_info(samples: Samples) -> dict[str, str]:
    (labels,) = [dict(ls) for (n, ls) in samples if n == "target_info"]
    return labels


def test_target_info_carries_the_cluster_node_and_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with (
        node("m-named", prometheus_addr="127.0.0.1:0", cluster="prod-eu") as named,
        node("m-default", prometheus_addr="127.0.0.1:0") as default,
    ):
        info = target_info(scrape(meters(named).prometheus_address))
        assert {k: info[k] for k in info if k.startswith("service_")} == {
            "service_name": "gridkv",
            "service_namespace": "prod-eu",
            "service_instance_id": "m-named",
            "service_version": _version(),
        }
        info = target_info(scrape(meters(default).prometheus_address))
        assert info["service_namespace"] == "gridkv"
        assert info["service_instance_id"] == "m-default"
    # Unset, the cluster is the one the environment names; metrics.cluster comes first.
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=from-env,team=cache")
    with (
        node("m-env", prometheus_addr="127.0.0.1:0") as from_env,
        node("m-option", prometheus_addr="127.0.0.1:0", cluster="prod-us") as option,
    ):
        info = target_info(scrape(meters(from_env).prometheus_address))
        assert (info["service_namespace"], info["team"]) == ("from-env", "cache")
        info = target_info(scrape(meters(option).prometheus_address))
        assert (info["service_namespace"], info["team"]) == ("prod-us", "cache")


class _Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that keeps what it is sent."""

    received: ClassVar[list[ExportMetricsServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        self.received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ExportMetricsServiceRequest]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    received: list[ExportMetricsServiceRequest] = []
    _Receiver.received = received
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/metrics", received
    finally:
        server.shutdown()
        server.server_close()


def otlp_sums(
    requests: list[ExportMetricsServiceRequest], name: str
) -> list[tuple[dict[str, str], float]]:
    found = []
    for request in requests:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.sum.data_points:
                            attributes = {a.key: a.value.string_value for a in point.attributes}
                            found.append((attributes, point.as_int or point.as_double))
    return found


def test_an_otlp_export_arrives_and_decodes(
    collector: tuple[str, list[ExportMetricsServiceRequest]],
) -> None:
    endpoint, received = collector
    with node("m-otlp", otlp_endpoint=endpoint, interval="200ms") as kv:
        for i in range(3):
            kv.set(f"k{i}", b"v")

        def exported() -> bool:
            return any(
                v == 3
                for a, v in otlp_sums(received, "gridkv.operations")
                if a.get("gridkv.operation") == "set"
            )

        deadline = time.monotonic() + 10
        while not exported():
            assert time.monotonic() < deadline, "no OTLP export with the three sets"
            time.sleep(0.05)
        resource = {
            a.key: a.value.string_value
            for a in received[-1].resource_metrics[0].resource.attributes
        }
        assert resource["service.name"] == "gridkv"
        assert resource["service.namespace"] == "gridkv"
        assert resource["service.instance.id"] == "m-otlp"


def loop_thread(kv: GridKV) -> int:
    """The id of the thread that runs ``kv``'s node's event loop."""

    async def ident() -> int:
        return threading.get_ident()

    assert kv.node.loop is not None
    return asyncio.run_coroutine_threadsafe(ident(), kv.node.loop).result(5)


def loop_operations(kv: GridKV, seconds: float) -> int:
    """Reads and writes through the node's loop done in ``seconds``."""
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        kv.set(f"k{done % 100}", b"v", consistency="all")
        kv.get(f"k{done % 100}", consistency="all")
        done += 2
    return done


def test_a_failing_exporter_never_slows_or_breaks_the_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Where every collection and export runs: never on the node's loop.
    threads: set[int] = set()
    exports: list[int] = []
    export, observers = OTLPMetricExporter.export, NodeTelemetry.observers

    def exporting(self: OTLPMetricExporter, *args: Any, **kwargs: Any) -> Any:
        exports.append(threading.get_ident())
        return export(self, *args, **kwargs)

    def observing(self: NodeTelemetry) -> Any:
        threads.add(threading.get_ident())
        return observers(self)

    monkeypatch.setattr(OTLPMetricExporter, "export", exporting)
    monkeypatch.setattr(NodeTelemetry, "observers", observing)
    dead = f"http://127.0.0.1:{free_port()}/v1/metrics"  # nothing listens
    start = time.monotonic()
    one_replica = {"replica_count": 1}
    with (
        node("m-dead", one_replica, otlp_endpoint=dead, interval="100ms") as kv,
        node("m-none", one_replica) as none,
    ):
        loops = {loop_thread(kv), loop_thread(none)}
        # Operations through the loop, the node exporting to a dead endpoint against a node
        # exporting nothing, in turns; a bound no scheduling hiccup reaches.
        with_dead = without = 0
        for _ in range(3):
            with_dead += loop_operations(kv, 0.25)
            without += loop_operations(none, 0.25)
        assert with_dead >= 0.5 * without, (with_dead, without)
        deadline = time.monotonic() + 1
        writes = 0
        while time.monotonic() < deadline:  # exports fail meanwhile, every 100 ms
            kv.set(f"k{writes % 100}", b"v")
            writes += 1
        assert kv.get("k1") == b"v"
        assert writes > 10_000  # the fast path, unhindered
        assert exports, "no export was tried"
    assert time.monotonic() - start < 15  # close does not hang on the dead endpoint
    assert threads and not threads & loops  # collected off the loops
    assert not set(exports) & loops  # exported off the loops, the last one at close too


def test_a_port_taken_or_no_plugin_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"metrics.prometheus_addr.*cannot listen"):
            node("m-taken", prometheus_addr=f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=r"metrics.otlp_endpoint.*http"):
        node("m-bad", otlp_endpoint="collector:4318")


APP_SDK = """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from gridkv import GridKV

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
with GridKV(
    local_node_id="app", local_address="app:7946", network={"type": "memory"},
    metrics={"prometheus_addr": "127.0.0.1:0"}, log={"level": "error"},
) as kv:
    kv.set("k", b"v")
    assert kv.node._own_meters is None  # nothing of its own installed
    names = {
        m.name
        for r in reader.get_metrics_data().resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
    }
    assert "gridkv.operations" in names, names
print("recorded into the application's SDK")
"""


def test_an_application_sdk_takes_precedence() -> None:
    # In a process of its own: a process sets its global meter provider once.
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", APP_SDK], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "recorded into the application's SDK" in done.stdout


def test_a_node_that_fails_to_start_releases_its_prometheus_port() -> None:
    port = free_port()
    with node("m-first"):
        # The same memory address again: the start fails, after the exporter opened.
        with pytest.raises(PeerUnavailable, match="already in use"):
            GridKV(
                local_node_id="m-second",
                local_address="m-first:7946",
                network={"type": "memory"},
                metrics={"prometheus_addr": f"127.0.0.1:{port}"},
            )
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # free again
        assert not [t for t in threading.enumerate() if "serve_forever" in t.name]


def test_the_last_otlp_export_at_close_carries_the_node(
    collector: tuple[str, list[ExportMetricsServiceRequest]],
) -> None:
    endpoint, received = collector
    with node("m-last", otlp_endpoint=endpoint, interval="60s") as kv:
        for i in range(3):
            kv.set(f"k{i}", b"v")
    # No interval passed: only the export at close can carry the three sets.
    sets = [
        v for a, v in otlp_sums(received, "gridkv.operations") if a.get("gridkv.operation") == "set"
    ]
    assert 3 in sets


class _Silent(http.server.BaseHTTPRequestHandler):
    """A collector that takes the request and never answers."""

    def do_POST(self) -> None:
        time.sleep(30)

    def log_message(self, *args: Any) -> None:
        pass


def test_close_does_not_wait_on_a_collector_that_never_answers() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kv = node("m-slow", otlp_endpoint=f"http://127.0.0.1:{server.server_port}/v1/metrics")
        kv.set("k", b"v")
        start = time.monotonic()
        kv.close(timeout=1.0)
        assert time.monotonic() - start < 3.0
    finally:
        server.shutdown()
        server.server_close()
