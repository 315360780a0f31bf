"""`PrometheusExporter`: the cluster's counters and levels on a ``/metrics`` endpoint of
this process, with prometheus-client; or those of one `CacheManager` (its
`CacheMetrics`) under the seed's metric names (``omnicache_cache_hits_total``...).

Each exporter has its own ``CollectorRegistry`` (two exporters in one process do not
clash, and nothing is registered globally at import) and one collector that reads the
live cluster at every scrape: no value is frozen. Names are the ones in
`omnicache_cluster.observability.metrics`, without Ray's ``ray_`` prefix. Latency and
score histograms are only on Ray's endpoint: they are aggregated inside the actors.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.observability.metrics import (
    ALL_METRICS,
    EXPORTER_UP,
    ActorMetricsConfig,
    MetricSpec,
)
from omnicache_cluster.observability.snapshot import ClusterSource

__all__ = ["PrometheusExporter"]

_log = logging.getLogger(__name__)
_PREFIX = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class _ClusterCollector:
    """A prometheus-client collector over a `ClusterSource`."""

    def __init__(self, source: ClusterSource) -> None:
        self._source = source
        self._faults = FaultLog("Prometheus scrape of the cache cluster", _log, interval_s=60.0)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            samples = self._source.samples()
            up = 1.0
        except Exception as exc:  # a dead cluster shows as up == 0, not as an HTTP 500
            self._faults.record("scrape", exc)
            samples, up = {}, 0.0
        samples[(EXPORTER_UP.name, (self._source.namespace,))] = up
        by_name: dict[str, list[tuple[tuple[str, ...], float]]] = {}
        for (name, labels), value in samples.items():
            by_name.setdefault(name, []).append((labels, value))
        for spec in ALL_METRICS:
            rows = by_name.get(spec.name)
            if not rows:
                continue
            family = _family(spec, CounterMetricFamily, GaugeMetricFamily)
            for labels, value in sorted(rows):
                family.add_metric(list(labels), value)
            yield family


class _ManagerCollector:
    """A prometheus-client collector over one `CacheMetrics`, with the seed's names."""

    def __init__(self, metrics: Any, prefix: str) -> None:
        self._metrics = metrics
        self._prefix = prefix

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from omnicache_cluster.observability.cache_metrics import SEED_PROMETHEUS, seed_values

        values = seed_values(self._metrics)
        for name, kind, help_, field in SEED_PROMETHEUS:
            full = f"{self._prefix}_{name}"
            if kind == "counter":  # the family adds the _total suffix back
                yield CounterMetricFamily(full.removesuffix("_total"), help_, value=values[field])
            else:
                yield GaugeMetricFamily(full, help_, value=values[field])


def _family(spec: MetricSpec, counter: Any, gauge: Any) -> Any:
    if spec.kind == "counter":  # the family adds the _total suffix back
        return counter(spec.name.removesuffix("_total"), spec.help, labels=list(spec.labels))
    return gauge(spec.name, spec.help, labels=list(spec.labels), unit="")


class PrometheusExporter:
    """Serve the cluster's metrics, or one manager's, on ``http://host:port/metrics``.

    Args:
        cluster: the cluster's admin client (`CacheCluster.start` or ``connect``), or
            a `CacheManager` or `CacheMetrics` of this process (served under the
            seed's names: ``{namespace}_cache_hits_total``, ``_cache_misses_total``,
            ``_cache_evictions_total``, ``_cache_sets_total``, ``_cache_hit_rate``,
            ``_provider_cache_hits_total``, ``_tokens_saved_total``,
            ``_cost_saved_usd``).
        port: the port to listen on (0: any free port; see `port`). When omitted:
            0 for a cluster, 9090 (the seed's) for a manager.
        namespace: the name prefix of a manager's series (the seed's argument; a
            cluster's names are fixed).
        host: the address to bind (loopback by default, where the seed bound every
            address; ``0.0.0.0`` to be scraped from other machines).
        registry: the registry to register in (a new one by default).
        config: label limits (distinct tenants, layers, models kept apart).
        serve: start the HTTP server (``False``: only register the collector, e.g.
            to serve ``registry`` from your own web app).

    Usage::

        exporter = PrometheusExporter(cluster, port=9464)
        ...                                  # Prometheus scrapes exporter.url
        exporter.close()

        exporter = PrometheusExporter(manager.metrics, port=9090)  # the seed's form
        exporter.start()                     # already serving: start() is kept for it

    Raises:
        TypeError: ``namespace`` given with a cluster.
    """

    def __init__(
        self,
        cluster: Any,
        port: int | None = None,
        namespace: str = "omnicache",
        *,
        host: str = "127.0.0.1",
        registry: Any = None,
        config: ActorMetricsConfig | None = None,
        serve: bool = True,
    ) -> None:
        from prometheus_client import CollectorRegistry

        from omnicache_cluster.observability.cache_metrics import local_metrics

        metrics = local_metrics(cluster)
        self.registry = registry if registry is not None else CollectorRegistry()
        self._collector: Any
        if metrics is not None:
            if not _PREFIX.fullmatch(namespace):
                raise ValueError(f"namespace must be a metric name prefix, got {namespace!r}")
            self._collector = _ManagerCollector(metrics, namespace)
            port = 9090 if port is None else port
        else:
            if namespace != "omnicache":
                raise TypeError(
                    "namespace= names a manager's series; a cluster's names are fixed "
                    "(omnicache_...); docs/seed-semantic-metrics-cli.md maps the seed's names"
                )
            self._collector = _ClusterCollector(ClusterSource(cluster, config))
            port = 0 if port is None else port
        self.registry.register(self._collector)
        self.host = host
        self._port_wanted = port
        self._server: Any = None
        self._thread: Any = None
        self.port = 0
        if serve:
            self.start()

    def start(self, sync_interval: float | None = None) -> PrometheusExporter:
        """Serve ``/metrics`` if not serving yet (the seed's call; every scrape reads
        live values, so there is no sync loop and ``sync_interval`` is ignored)."""
        from prometheus_client import start_http_server

        if self._server is None:
            self._server, self._thread = start_http_server(
                self._port_wanted, addr=self.host, registry=self.registry
            )
            self.port = int(self._server.server_port)
        return self

    def stop(self) -> None:
        """The seed's name of `close`."""
        self.close()

    @property
    def url(self) -> str:
        """The ``/metrics`` URL (empty when not serving)."""
        if not self.port:
            return ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def render(self) -> bytes:
        """Return the exposition text a scrape would get now."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the server and unregister the collector (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            if self._thread is not None:
                self._thread.join(timeout=5)
        with contextlib.suppress(KeyError):  # closed before
            self.registry.unregister(self._collector)

    def __enter__(self) -> PrometheusExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
