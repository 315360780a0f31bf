"""`OpenTelemetryExporter`: the cluster's counters and levels as OpenTelemetry
instruments on a meter provider (opentelemetry-sdk).

Counters are observable *counters* (cumulative, monotonic), levels observable gauges:
never a count disguised as a gauge. The callbacks read the live cluster, once per
collection: the first callback of a collection fetches, the others of the same
collection reuse that read, so every collection sees current values and all its
instruments agree. Instrument names are the Prometheus names without ``_total``
(an OTel-to-Prometheus exporter adds it back to counters). Latency and score
histograms are only on Ray's endpoint: they are aggregated inside the actors.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from omnicache_cluster._version import __version__
from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.observability.metrics import (
    ALL_METRICS,
    EXPORTER_UP,
    ActorMetricsConfig,
    MetricSpec,
)
from omnicache_cluster.observability.snapshot import ClusterSource

__all__ = ["OpenTelemetryExporter", "otel_name"]

_log = logging.getLogger(__name__)

Rows = dict[str, list[tuple[tuple[str, ...], float]]]


def otel_name(spec: MetricSpec) -> str:
    """Return the OpenTelemetry instrument name of ``spec``."""
    return spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name


class _PerCollection:
    """One read of the cluster per collection: an instrument that was already served
    from the current read starts the next collection, so it triggers a new read."""

    def __init__(self, source: ClusterSource, max_age_s: float) -> None:
        self._source = source
        self._max_age = max_age_s
        self._lock = threading.Lock()
        self._rows: Rows = {}
        self._served: set[str] = set()
        self._at = -float("inf")
        self._faults = FaultLog("OpenTelemetry read of the cache cluster", _log, interval_s=60.0)

    def rows(self, name: str) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            now = time.monotonic()
            if name in self._served or now - self._at > self._max_age:
                self._rows = self._read()
                self._served = set()
                self._at = now
            self._served.add(name)
            return self._rows.get(name, [])

    def _read(self) -> Rows:
        try:
            samples = self._source.samples()
            up = 1.0
        except Exception as exc:  # a dead cluster shows as up == 0, not as an error
            self._faults.record("read", exc)
            samples, up = {}, 0.0
        samples[(EXPORTER_UP.name, (self._source.namespace,))] = up
        rows: Rows = {}
        for (name, labels), value in samples.items():
            rows.setdefault(name, []).append((labels, value))
        return rows


class OpenTelemetryExporter:
    """Report the cluster's metrics through an OpenTelemetry meter provider.

    Args:
        cluster: the cluster's admin client (`CacheCluster.start` or ``connect``).
        meter_provider: the SDK ``MeterProvider`` with your readers/exporters (the
            global one by default).
        config: label limits (distinct tenants, layers, models kept apart).
        max_age_s: a read older than this is refreshed even within a collection.

    Usage::

        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(otlp)])
        OpenTelemetryExporter(cluster, provider)
    """

    def __init__(
        self,
        cluster: Any,
        meter_provider: Any = None,
        *,
        config: ActorMetricsConfig | None = None,
        max_age_s: float = 5.0,
    ) -> None:
        from opentelemetry import metrics as otel_metrics

        provider = meter_provider or otel_metrics.get_meter_provider()
        self.meter = provider.get_meter("omnicache_cluster", __version__)
        self._reads = _PerCollection(ClusterSource(cluster, config), max_age_s)
        self._closed = False
        self.instruments: dict[str, Any] = {}
        for spec in ALL_METRICS:
            if spec.kind == "histogram":
                continue
            create = (
                self.meter.create_observable_counter
                if spec.kind == "counter"
                else self.meter.create_observable_gauge
            )
            self.instruments[spec.name] = create(
                otel_name(spec),
                callbacks=[functools.partial(self._observe, spec)],
                unit=spec.unit,
                description=spec.help,
            )

    def _observe(self, spec: MetricSpec, options: Any = None) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        if self._closed:
            return []
        return [
            Observation(value, dict(zip(spec.labels, labels, strict=True)))
            for labels, value in self._reads.rows(spec.name)
        ]

    def close(self) -> None:
        """Stop reporting (OpenTelemetry cannot remove instruments; they go silent)."""
        self._closed = True
