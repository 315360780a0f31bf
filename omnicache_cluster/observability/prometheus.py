"""`PrometheusExporter`: the cluster's counters and levels on a ``/metrics`` endpoint of
this process, with prometheus-client.

Each exporter has its own ``CollectorRegistry`` (two exporters in one process do not
clash, and nothing is registered globally at import) and one collector that reads the
live cluster at every scrape: no value is frozen. Names are the ones in
`omnicache_cluster.observability.metrics`, without Ray's ``ray_`` prefix. Latency and
score histograms are only on Ray's endpoint: they are aggregated inside the actors.
"""

from __future__ import annotations

import contextlib
import logging
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


def _family(spec: MetricSpec, counter: Any, gauge: Any) -> Any:
    if spec.kind == "counter":  # the family adds the _total suffix back
        return counter(spec.name.removesuffix("_total"), spec.help, labels=list(spec.labels))
    return gauge(spec.name, spec.help, labels=list(spec.labels), unit="")


class PrometheusExporter:
    """Serve the cluster's metrics on ``http://host:port/metrics``.

    Args:
        cluster: the cluster's admin client (`CacheCluster.start` or ``connect``).
        port: the port to listen on (0: any free port; see `port`).
        host: the address to bind (loopback by default; ``0.0.0.0`` to be scraped
            from other machines).
        registry: the registry to register in (a new one by default).
        config: label limits (distinct tenants, layers, models kept apart).
        serve: start the HTTP server (``False``: only register the collector, e.g.
            to serve ``registry`` from your own web app).

    Usage::

        exporter = PrometheusExporter(cluster, port=9464)
        ...                                  # Prometheus scrapes exporter.url
        exporter.close()
    """

    def __init__(
        self,
        cluster: Any,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        registry: Any = None,
        config: ActorMetricsConfig | None = None,
        serve: bool = True,
    ) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = registry if registry is not None else CollectorRegistry()
        self._collector = _ClusterCollector(ClusterSource(cluster, config))
        self.registry.register(self._collector)
        self.host = host
        self._server: Any = None
        self._thread: Any = None
        self.port = 0
        if serve:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
            self.port = int(self._server.server_port)

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
