"""Metrics of the cache cluster: inside Ray actors (``ray.util.metrics``, Ray's
Prometheus endpoint and dashboard), and in client processes (`PrometheusExporter`,
`OpenTelemetryExporter`, `ClusterMetrics`), plus what cache hits saved (`record_saving`,
`PriceTable`).

Importing this package imports neither Ray, prometheus-client nor OpenTelemetry;
each loads with the name that needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnicache_cluster.observability.cost import (
        DEFAULT_PRICES,
        ModelPrice,
        PriceTable,
        flush_savings,
        price_table,
        record_saving,
        set_price_table,
    )
    from omnicache_cluster.observability.metrics import (
        ALL_METRICS,
        ActorMetricsConfig,
        MetricSpec,
        ray_exported_names,
    )
    from omnicache_cluster.observability.otel import OpenTelemetryExporter
    from omnicache_cluster.observability.prometheus import PrometheusExporter
    from omnicache_cluster.observability.snapshot import ClusterMetrics, cluster_metrics

__all__ = [
    "ALL_METRICS",
    "DEFAULT_PRICES",
    "ActorMetricsConfig",
    "ClusterMetrics",
    "MetricSpec",
    "ModelPrice",
    "OpenTelemetryExporter",
    "PriceTable",
    "PrometheusExporter",
    "cluster_metrics",
    "flush_savings",
    "price_table",
    "ray_exported_names",
    "record_saving",
    "set_price_table",
]

_COST = "omnicache_cluster.observability.cost"
_METRICS = "omnicache_cluster.observability.metrics"
_LAZY = {
    "ALL_METRICS": _METRICS,
    "ActorMetricsConfig": _METRICS,
    "MetricSpec": _METRICS,
    "ray_exported_names": _METRICS,
    "DEFAULT_PRICES": _COST,
    "ModelPrice": _COST,
    "PriceTable": _COST,
    "flush_savings": _COST,
    "price_table": _COST,
    "record_saving": _COST,
    "set_price_table": _COST,
    "ClusterMetrics": "omnicache_cluster.observability.snapshot",
    "cluster_metrics": "omnicache_cluster.observability.snapshot",
    "OpenTelemetryExporter": "omnicache_cluster.observability.otel",
    "PrometheusExporter": "omnicache_cluster.observability.prometheus",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
