"""`OpenTelemetryExporter`: the cluster's counters and levels as OpenTelemetry
instruments on a meter provider (opentelemetry-sdk).

Counters are observable *counters* (cumulative, monotonic), levels observable gauges:
never a count disguised as a gauge. The callbacks read the live cluster, once per
collection: the first callback of a collection fetches, the others of the same
collection reuse that read, so every collection sees current values and all its
instruments agree. Instrument names are the Prometheus names without ``_total``
(an OTel-to-Prometheus exporter adds it back to counters). Latency and score
histograms are only on Ray's endpoint: they are aggregated inside the actors.

Given a `CacheManager` or `CacheMetrics` of this process instead, it reports that
manager's counters under the seed's instrument names (``omnicache.hits``,
``omnicache.misses``, ``omnicache.hit_rate``, ``omnicache.cost_saved_usd``, plus
``sets``, ``evictions``, ``provider_cache_hits``, ``tokens_saved``); and the seed's
``endpoint=`` pushes them over OTLP/gRPC to a collector.
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
    """Report the cluster's metrics, or one manager's, through an OpenTelemetry meter
    provider.

    Args:
        cluster: the cluster's admin client (`CacheCluster.start` or ``connect``), or
            a `CacheManager` or `CacheMetrics` of this process.
        meter_provider: the SDK ``MeterProvider`` with your readers/exporters (the
            global one by default).
        config: label limits (distinct tenants, layers, models kept apart).
        max_age_s: a read older than this is refreshed even within a collection.
        metrics: the seed's keyword for a manager's `CacheMetrics` (instead of
            ``cluster``).
        endpoint: the seed's OTLP/gRPC collector address: this exporter makes its own
            meter provider that pushes there every ``export_interval_ms`` (needs
            ``opentelemetry-exporter-otlp-proto-grpc``). Not with ``meter_provider``.
        export_interval_ms: how often ``endpoint`` is pushed to (the seed's 10 s).
        namespace: the prefix of a manager's instrument names (``omnicache``).

    Raises:
        TypeError: both or neither of ``cluster`` and ``metrics``, or ``endpoint``
            together with ``meter_provider``.
        ImportError: ``endpoint`` without the OTLP exporter package (named).

    Usage::

        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(otlp)])
        OpenTelemetryExporter(cluster, provider)
    """

    def __init__(
        self,
        cluster: Any = None,
        meter_provider: Any = None,
        *,
        config: ActorMetricsConfig | None = None,
        max_age_s: float = 5.0,
        metrics: Any = None,
        endpoint: str | None = None,
        export_interval_ms: int = 10_000,
        namespace: str = "omnicache",
    ) -> None:
        from opentelemetry import metrics as otel_metrics

        from omnicache_cluster.observability.cache_metrics import local_metrics

        if (cluster is None) == (metrics is None):
            raise TypeError("give the cluster (or a CacheManager) or metrics=, exactly one")
        source = cluster if metrics is None else metrics
        self._own_provider: Any = None
        if endpoint is not None:
            if meter_provider is not None:
                raise TypeError("give endpoint= or meter_provider=, not both")
            meter_provider = self._own_provider = _otlp_provider(endpoint, export_interval_ms)
        provider = meter_provider or otel_metrics.get_meter_provider()
        self.meter = provider.get_meter("omnicache_cluster", __version__)
        self._closed = False
        self.instruments: dict[str, Any] = {}
        local = local_metrics(source)
        if local is not None:
            self._local_instruments(local, namespace)
            return
        if metrics is not None:
            raise TypeError(
                f"metrics= takes a CacheMetrics or CacheManager, got {type(metrics).__qualname__}"
            )
        self._reads = _PerCollection(ClusterSource(cluster, config), max_age_s)
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

    def _local_instruments(self, metrics: Any, namespace: str) -> None:
        """Register the seed's instruments over one manager's `CacheMetrics`."""
        from omnicache_cluster.observability.cache_metrics import SEED_OTEL, seed_values

        reads = _LocalReads(metrics, seed_values)
        for name, kind, help_, field, unit in SEED_OTEL:
            create = (
                self.meter.create_observable_counter
                if kind == "counter"
                else self.meter.create_observable_gauge
            )
            self.instruments[f"{namespace}.{name}"] = create(
                f"{namespace}.{name}",
                callbacks=[functools.partial(self._observe_local, reads, field)],
                unit=unit,
                description=help_,
            )

    def _observe_local(self, reads: _LocalReads, field: str, options: Any = None) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        if self._closed:
            return []
        return [Observation(reads.value(field))]

    def start(self) -> OpenTelemetryExporter:
        """The seed's call: the instruments report from construction on."""
        return self

    def stop(self) -> None:
        """The seed's name of `close`."""
        self.close()

    def close(self) -> None:
        """Stop reporting (OpenTelemetry cannot remove instruments; they go silent);
        a provider made for ``endpoint`` pushes once more and shuts down."""
        if self._own_provider is not None and not self._closed:
            self._own_provider.shutdown()
        self._closed = True


class _LocalReads:
    """One snapshot of a `CacheMetrics` per collection (the first instrument of a
    collection reads, the others of the same collection reuse it)."""

    def __init__(self, metrics: Any, read: Any) -> None:
        self._metrics = metrics
        self._read = read
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}
        self._served: set[str] = set()

    def value(self, field: str) -> float:
        with self._lock:
            if field in self._served or not self._values:
                self._values = self._read(self._metrics)
                self._served = set()
            self._served.add(field)
            return self._values[field]


def _otlp_provider(endpoint: str, export_interval_ms: int) -> Any:
    """Return a meter provider that pushes to ``endpoint`` over OTLP/gRPC.

    Raises:
        ImportError: the OTLP exporter package is not installed (named).
    """
    try:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    except ImportError:
        raise ImportError(
            "endpoint= needs the OTLP exporter: pip install opentelemetry-exporter-otlp-proto-grpc"
            " (or pass meter_provider= with your own reader)"
        ) from None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint), export_interval_millis=export_interval_ms
    )
    return MeterProvider(metric_readers=[reader])
