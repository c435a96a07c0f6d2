"""The meter provider gridkv-metrics makes for one node: Prometheus and OTLP readers."""

from __future__ import annotations

import contextlib
from importlib import metadata
from typing import TYPE_CHECKING

from gridkv.base.errors import ConfigError
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from gridkv.base.options import Options

__all__ = ["DEFAULT_CLUSTER", "NodeMeters", "node_resource"]

#: Seconds an OTLP export may take before it is given up (the node never waits for it).
OTLP_TIMEOUT = 5.0
#: ``service.namespace`` of a node whose options and environment name no cluster.
DEFAULT_CLUSTER = "gridkv"


def _version() -> str:
    try:
        return metadata.version("gridkv-core")
    except metadata.PackageNotFoundError:  # a source tree
        return "0+unknown"


def node_resource(options: Options) -> Resource:
    """The resource attributes of a node's metrics.

    ``service.name`` "gridkv", ``service.namespace`` the cluster (``metrics.cluster``; unset,
    the one ``OTEL_RESOURCE_ATTRIBUTES`` names, else :data:`DEFAULT_CLUSTER`),
    ``service.instance.id`` the node id, ``service.version`` GridKV's, and what the SDK adds
    (``telemetry.sdk.*``, and further ``OTEL_RESOURCE_ATTRIBUTES``).
    """
    attributes = {
        "service.name": "gridkv",
        "service.instance.id": options.local_node_id,
        "service.version": _version(),
    }
    if options.metrics.cluster:
        attributes["service.namespace"] = options.metrics.cluster
    resource = Resource.create(attributes)
    if not resource.attributes.get("service.namespace"):
        resource = resource.merge(Resource({"service.namespace": DEFAULT_CLUSTER}))
    return resource


class NodeMeters(MeterProvider):
    """A node's own meter provider, with the readers its ``metrics`` options ask for.

    Prometheus: a registry of its own, served on ``metrics.prometheus_addr`` by
    prometheus_client's HTTP server (a thread, started by :meth:`open` as the node starts),
    so each node of a process has its own endpoint and series. OTLP: a periodic reader
    exporting over HTTP every ``metrics.interval`` from a thread of its own, so an endpoint
    that is down or slow costs
    the node nothing (the exporter logs and retries; an export gives up after
    :data:`OTLP_TIMEOUT`). Resource attributes: see :func:`node_resource`; Prometheus shows
    them in ``target_info``, OTLP on each export's resource.
    """

    def __init__(self, options: Options) -> None:
        metrics = options.metrics
        readers: list[MetricReader] = []
        self.registry = CollectorRegistry()
        self._server: WSGIServer | None = None
        #: The address Prometheus scrapes (the port it got, for a port of 0).
        self.prometheus_address = ""
        if metrics.prometheus_addr:
            readers.append(PrometheusMetricReader(registry=self.registry))
        if metrics.otlp_endpoint:
            exporter = OTLPMetricExporter(endpoint=metrics.otlp_endpoint, timeout=OTLP_TIMEOUT)
            readers.append(
                PeriodicExportingMetricReader(
                    exporter,
                    export_interval_millis=metrics.interval * 1000,
                    export_timeout_millis=OTLP_TIMEOUT * 1000,
                )
            )
        resource = node_resource(options)
        super().__init__(metric_readers=readers, resource=resource, shutdown_on_exit=False)
        self._address = metrics.prometheus_addr

    def open(self) -> None:
        """Listen on ``metrics.prometheus_addr`` (the node calls it as it starts).

        :raises ConfigError: the address cannot be listened on.
        """
        if self._address and self._server is None:
            host, _, port_text = self._address.rpartition(":")
            host, port = host.strip("[]") or "0.0.0.0", int(port_text)
            try:
                self._server, _ = start_http_server(port, host, registry=self.registry)
            except OSError as exc:
                raise ConfigError(
                    f"config key 'metrics.prometheus_addr': cannot listen on "
                    f"{self._address!r}: {exc.strerror or exc}"
                ) from None
            shown = f"[{host}]" if ":" in host else host
            self.prometheus_address = f"{shown}:{self._server.server_port}"

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Stop the readers (a last OTLP export, bounded) and the Prometheus endpoint."""
        try:
            super().shutdown(timeout_millis=timeout_millis)
        finally:
            if self._server is not None:
                server, self._server = self._server, None
                server.shutdown()
                with contextlib.suppress(OSError):
                    server.server_close()
