"""OpenTelemetry SDK, Prometheus and OTLP export for GridKV.

This distribution is registered as the GridKV plugin ``metrics`` (entry-point group
``gridkv.plugins``). For a node whose options set ``metrics.prometheus_addr`` or
``metrics.otlp_endpoint``, it makes a ``MeterProvider`` of the node's own
(:class:`NodeMeters`), labelled with the node's resource attributes, that serves Prometheus
text on ``http://<prometheus_addr>/metrics`` and exports OTLP over HTTP every
``metrics.interval``; the node shuts it down when it stops. Several nodes in one process each
get their own, with their own port. When the application has configured an OpenTelemetry SDK
of its own, the node records into that instead (and this plugin installs nothing).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gridkv import hookimpl

if TYPE_CHECKING:
    from gridkv.base.options import Options

__all__ = ["NodeMeters", "gridkv_meter_provider"]

log = logging.getLogger("gridkv")


@hookimpl
def gridkv_meter_provider(options: Options) -> Any:
    """A :class:`NodeMeters` for a node whose options ask for an exporter, else ``None``."""
    if not options.metrics.exported:
        return None
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    if isinstance(metrics.get_meter_provider(), MeterProvider):
        log.info(
            "the application configured an OpenTelemetry SDK: node %r records into it, and "
            "metrics.prometheus_addr / metrics.otlp_endpoint are not used",
            options.local_node_id,
        )
        return None
    from gridkv_metrics.provider import NodeMeters

    return NodeMeters(options)


def __getattr__(name: str) -> Any:
    if name == "NodeMeters":  # imported lazily: the SDK loads only when used
        from gridkv_metrics.provider import NodeMeters

        return NodeMeters
    raise AttributeError(name)
