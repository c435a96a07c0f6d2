"""gridkv-metrics for real: an HTTP scrape of /metrics parsed with prometheus_client's parser,
an OTLP export received over HTTP and decoded with the OTLP protobuf classes, and exporters
that fail without the node noticing."""

from __future__ import annotations

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
from gridkv_metrics.provider import NodeMeters
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node(node_id: str, **metrics: Any) -> GridKV:
    return GridKV(
        local_node_id=node_id,
        local_address=f"{node_id}:7946",
        network={"type": "memory"},
        metrics=metrics,
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


def test_a_scrape_shows_exactly_the_operations_done_each_node_its_own() -> None:
    with (
        node("m-a", prometheus_addr="127.0.0.1:0") as a,
        node("m-b", prometheus_addr="127.0.0.1:0") as b,
    ):
        for i in range(7):
            a.set(f"k{i}", b"v")
        a.delete("k0")
        b.set("x", b"y")
        samples = scrape(meters(a).prometheus_address)
        assert (
            total(samples, "gridkv_operations_total", gridkv_operation="set", gridkv_path="local")
            == 7
        )
        assert (
            total(
                samples, "gridkv_operations_total", gridkv_operation="delete", gridkv_path="local"
            )
            == 1
        )  # local, not the loop
        assert total(samples, "gridkv_storage_keys", gridkv_key_kind="value") == 6
        assert total(samples, "gridkv_storage_keys", gridkv_key_kind="tombstone") == 1
        assert {
            dict(ls)["gridkv_node_id"] for (n, ls) in samples if n == "gridkv_storage_keys"
        } == {"m-a"}
        other = scrape(meters(b).prometheus_address)
        assert total(other, "gridkv_operations_total", gridkv_operation="set") == 1
    # closed: the endpoint is gone
    with pytest.raises(OSError, match="Connection refused"):
        scrape(meters(a).prometheus_address)


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
        assert resource["service.instance.id"] == "m-otlp"


def test_a_failing_exporter_never_slows_or_breaks_the_node() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1/metrics"  # nothing listens
    start = time.monotonic()
    with node("m-dead", otlp_endpoint=dead, interval="100ms") as kv:
        deadline = time.monotonic() + 1
        writes = 0
        while time.monotonic() < deadline:  # exports fail meanwhile, every 100 ms
            kv.set(f"k{writes % 100}", b"v")
            writes += 1
        assert kv.get("k1") == b"v"
        assert writes > 10_000  # the fast path, unhindered
    assert time.monotonic() - start < 10  # close does not hang on the dead endpoint


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
