"""Metrics without a cluster: the seed's `CacheMetrics` API, and a single-process manager
exported under the seed's names through the real prometheus-client HTTP endpoint, the
real OpenTelemetry SDK, and OTLP/gRPC to a collector on 127.0.0.1."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from concurrent import futures

import pytest
from prometheus_client.parser import text_string_to_metric_families

from omnicache_cluster import (
    CacheKeyBuilder,
    CacheManager,
    CacheMetrics,
    InMemoryBackend,
    OpenTelemetryExporter,
    PrometheusExporter,
)


def _seed_manager() -> CacheManager:
    """The seed README's metrics example: one miss, one set, one hit."""
    manager = CacheManager(backend=InMemoryBackend(), key_builder=CacheKeyBuilder())
    manager.get("key")  # miss
    manager.set("key", "val")
    manager.get("key")  # hit
    return manager


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310 - our loopback URL
        text = reply.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


# -- CacheMetrics, the seed's API ----------------------------------------------------


def test_seed_readme_metrics_snapshot():
    manager = _seed_manager()
    snap = manager.metrics.snapshot()
    seed_keys = ("hits", "misses", "evictions", "sets", "hit_rate", "miss_rate")
    assert {k: snap[k] for k in seed_keys} == {
        "hits": 1,
        "misses": 1,
        "evictions": 0,
        "sets": 1,
        "hit_rate": 0.5,
        "miss_rate": 0.5,
    }
    assert list(snap)[:6] == ["hits", "misses", "evictions", "sets", "hit_rate", "miss_rate"]


def test_seed_recorders_rates_and_provider_fields():
    m = CacheMetrics()
    assert (m.hit_rate, m.miss_rate, m.evictions) == (0.0, 0.0, 0)
    for _ in range(3):
        m.record_hit()
    m.record_miss()
    m.record_set()
    m.record_eviction()
    m.record_eviction()
    assert (m.hits, m.misses, m.sets, m.evictions) == (3, 1, 1, 2)
    assert (m.hit_rate, m.miss_rate) == (0.75, 0.25)
    # The seed's PromptCacheLayer wrote these fields directly; both ways work.
    m.provider_cache_hits += 1
    m.estimated_tokens_saved += 1200
    m.estimated_cost_saved_usd += 0.0036
    m.record_provider_cache_hit(800, 0.0024)
    snap = m.snapshot()
    assert snap["provider_cache_hits"] == 2
    assert snap["estimated_tokens_saved"] == 2000
    assert snap["estimated_cost_saved_usd"] == pytest.approx(0.006)
    m.reset()
    assert m.snapshot() == {
        "hits": 0,
        "misses": 0,
        "evictions": 0,
        "sets": 0,
        "hit_rate": 0.0,
        "miss_rate": 0.0,
        "provider_cache_hits": 0,
        "estimated_tokens_saved": 0,
        "estimated_cost_saved_usd": 0.0,
    }


def test_seed_dataclass_fields_as_constructor_arguments():
    m = CacheMetrics(hits=3, misses=1, evictions=2, sets=4)
    assert (m.hits, m.misses, m.evictions, m.sets, m.hit_rate) == (3, 1, 2, 4, 0.75)


def test_backend_evictions_count_and_reset_starts_from_now():
    manager = CacheManager(InMemoryBackend(max_size=2), CacheKeyBuilder())
    for i in range(5):
        manager.set(f"k{i}", i)
    assert manager.metrics.evictions == 3  # the LRU's, read from the backend
    manager.metrics.record_eviction()
    assert manager.metrics.snapshot()["evictions"] == 4
    manager.metrics.reset()
    assert manager.metrics.evictions == 0
    manager.set("k9", 9)
    assert manager.metrics.evictions == 1


# -- Prometheus ----------------------------------------------------------------------

_SEED_NAMES = {
    "omnicache_cache_hits_total": 1.0,
    "omnicache_cache_misses_total": 1.0,
    "omnicache_cache_evictions_total": 0.0,
    "omnicache_cache_sets_total": 1.0,
    "omnicache_cache_hit_rate": 0.5,
    "omnicache_provider_cache_hits_total": 0.0,
    "omnicache_tokens_saved_total": 0.0,
    "omnicache_cost_saved_usd": 0.0,
}


def test_prometheus_serves_a_single_process_manager_under_the_seeds_names():
    manager = _seed_manager()
    with PrometheusExporter(manager, port=0) as exporter:
        assert exporter.url.startswith("http://127.0.0.1:")
        assert _scrape(exporter.url) == _SEED_NAMES
        # Every scrape reads the live counters: nothing is frozen at start-up.
        manager.get("key")
        manager.metrics.record_provider_cache_hit(1000, 0.003)
        after = _scrape(exporter.url)
        assert after["omnicache_cache_hits_total"] == 2.0
        assert after["omnicache_cache_hit_rate"] == pytest.approx(2 / 3)
        assert after["omnicache_provider_cache_hits_total"] == 1.0
        assert after["omnicache_tokens_saved_total"] == 1000.0
        assert after["omnicache_cost_saved_usd"] == pytest.approx(0.003)


def test_prometheus_seed_form_with_metrics_namespace_start_stop():
    manager = _seed_manager()
    exporter = PrometheusExporter(manager.metrics, 0, "myapp")  # (metrics, port, namespace)
    assert exporter.start() is exporter  # already serving; start() is idempotent
    try:
        scraped = _scrape(exporter.url)
        assert scraped["myapp_cache_hits_total"] == 1.0
        assert not any(name.startswith("omnicache_") for name in scraped)
    finally:
        exporter.stop()
    with pytest.raises(urllib.error.URLError):  # the server is gone
        urllib.request.urlopen(exporter.url, timeout=2)  # noqa: S310 - our loopback URL


def test_prometheus_manager_defaults_to_the_seeds_port():
    exporter = PrometheusExporter(_seed_manager(), serve=False)
    assert exporter._port_wanted == 9090
    assert b"omnicache_cache_sets_total 1.0" in exporter.render()
    exporter.close()
    with pytest.raises(ValueError, match="prefix"):
        PrometheusExporter(CacheMetrics(), namespace="my-app", serve=False)


# -- OpenTelemetry -------------------------------------------------------------------


def _otel_points(reader) -> dict[str, float]:
    data = reader.get_metrics_data()
    out = {}
    for rm in data.resource_metrics if data is not None else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                (point,) = metric.data.data_points
                out[metric.name] = point.value
    return out


def test_opentelemetry_sdk_reads_a_single_process_manager():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics._internal.point import Gauge, Sum
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    manager = _seed_manager()
    exporter = OpenTelemetryExporter(manager, provider)
    points = _otel_points(reader)
    assert points == {
        "omnicache.hits": 1,
        "omnicache.misses": 1,
        "omnicache.sets": 1,
        "omnicache.evictions": 0,
        "omnicache.hit_rate": 0.5,
        "omnicache.provider_cache_hits": 0,
        "omnicache.tokens_saved": 0,
        "omnicache.cost_saved_usd": 0.0,
    }
    manager.get("key")
    assert _otel_points(reader)["omnicache.hits"] == 2  # a new collection, a new read
    kinds = {
        m.name: type(m.data)
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert kinds["omnicache.hits"] is Sum  # a count is a counter, never a gauge
    assert kinds["omnicache.hit_rate"] is Gauge
    exporter.stop()
    assert _otel_points(reader) == {}
    provider.shutdown()


def test_opentelemetry_argument_errors_name_the_replacement():
    from opentelemetry.sdk.metrics import MeterProvider

    with pytest.raises(TypeError, match="exactly one"):
        OpenTelemetryExporter()
    with pytest.raises(TypeError, match="not both"):
        OpenTelemetryExporter(
            metrics=CacheMetrics(), endpoint="http://127.0.0.1:1", meter_provider=MeterProvider()
        )
    with pytest.raises(TypeError, match="CacheMetrics or CacheManager"):
        OpenTelemetryExporter(metrics=object(), meter_provider=MeterProvider())


class _Collector:
    """An OTLP/gRPC metrics collector on 127.0.0.1 that keeps what it receives."""

    def __init__(self) -> None:
        import grpc
        from opentelemetry.proto.collector.metrics.v1 import (
            metrics_service_pb2,
            metrics_service_pb2_grpc,
        )

        self.received: list = []
        self.cond = threading.Condition()
        outer = self

        class Servicer(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                with outer.cond:
                    outer.received.append(request)
                    outer.cond.notify_all()
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with self.cond:
            requests = list(self.received)
        for request in requests:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        kind = metric.WhichOneof("data")
                        point = getattr(metric, kind).data_points[0]
                        value = point.as_double if point.HasField("as_double") else point.as_int
                        out[metric.name] = value
        return out

    def wait_for(self, name: str, value: float, timeout_s: float = 30.0) -> dict[str, float]:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while time.monotonic() < deadline:
                self.cond.wait(timeout=0.5)
                if self.values().get(name) == value:
                    break
        return self.values()


def test_opentelemetry_seed_endpoint_pushes_over_otlp_grpc():
    collector = _Collector()
    try:
        manager = _seed_manager()
        exporter = OpenTelemetryExporter(
            metrics=manager.metrics,
            endpoint=f"http://127.0.0.1:{collector.port}",
            export_interval_ms=200,
        )
        exporter.start()
        got = collector.wait_for("omnicache.hits", 1)
        assert got["omnicache.hits"] == 1
        assert got["omnicache.hit_rate"] == 0.5
        manager.get("key")
        exporter.stop()  # pushes once more before it shuts down
        assert collector.values()["omnicache.hits"] == 2
    finally:
        collector.server.stop(grace=None)


def test_exporting_a_manager_never_imports_ray(python_env):
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from omnicache_cluster import CacheManager, OpenTelemetryExporter, PrometheusExporter\n"
        "m = CacheManager()\n"
        "PrometheusExporter(m, port=0).close()\n"
        "OpenTelemetryExporter(m, MeterProvider()).close()\n"
        "print(json.dumps('ray' in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=python_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) is False
