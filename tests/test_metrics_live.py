"""Metrics of a live cluster after a known workload: Ray's metrics endpoint scraped over
HTTP, the `PrometheusExporter`'s ``/metrics``, the `OpenTelemetryExporter` read with an
in-memory reader, `ClusterMetrics`, and bounded label cardinality with 10,000 keys."""

from __future__ import annotations

import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from omnicache_cluster import (
    ActorMetricsConfig,
    CacheCluster,
    CacheMetrics,
    L2Config,
    OpenTelemetryExporter,
    PrometheusExporter,
    TenantQuota,
    record_saving,
)
from omnicache_cluster.observability import flush_savings
from omnicache_cluster.observability.metrics import ALL_METRICS, OTHER, ray_exported_names
from tests.conftest import unique

pytestmark = pytest.mark.ray

FAST = ActorMetricsConfig(interval_s=0.2)
WIDE = ActorMetricsConfig(interval_s=0.2, max_tenants=4, max_layers=3)
RAY_DEADLINE_S = 90.0
Series = list[tuple[str, dict[str, str], float]]

# What the workload below does, exactly: (metric, labels) -> value.
EXACT = {
    ("omnicache_hits_total", (("tenant", "acme"), ("layer", "response"))): 20,
    ("omnicache_misses_total", (("tenant", "acme"), ("layer", "response"))): 5,
    ("omnicache_requests_total", (("tenant", "acme"), ("layer", "response"))): 25,
    ("omnicache_sets_total", (("tenant", "acme"), ("layer", "response"))): 21,
    ("omnicache_hits_total", (("tenant", "beta"), ("layer", "embedding"))): 10,
    ("omnicache_sets_total", (("tenant", "beta"), ("layer", "embedding"))): 10,
    ("omnicache_misses_total", (("tenant", "beta"),)): 0,
    ("omnicache_deletes_total", ()): 2,
    ("omnicache_computes_total", (("tenant", "delta"),)): 1,
    ("omnicache_tokens_saved_total", (("model", "gpt-4o"), ("kind", "prompt"))): 3000,
    ("omnicache_tokens_saved_total", (("model", "gpt-4o"), ("kind", "completion"))): 600,
    ("omnicache_calls_saved_total", (("model", "gpt-4o"),)): 3,
    ("omnicache_tokens_saved_total", (("model", "claude-sonnet-4"), ("kind", "prompt"))): 1000,
    ("omnicache_calls_saved_total", (("model", "claude-sonnet-4"),)): 2,
}
EXACT_COST = {"gpt-4o": 3 * (1000 * 2.5 + 200 * 10.0) / 1e6, "claude-sonnet-4": 2 * 0.003}


@dataclass
class Observed:
    main: CacheCluster
    wide: CacheCluster
    off: CacheCluster
    wide_keys: list[str]
    best_scores: list[float]


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def _workload(main: CacheCluster, ray: Any) -> list[float]:
    """Run the known workload; return the best score of each semantic search."""
    acme, beta = main.for_tenant("acme"), main.for_tenant("beta")
    acme.set_many({f"a{i}": i for i in range(20)}, layer="response")
    acme.get_many([f"a{i}" for i in range(20)] + [f"absent{i}" for i in range(5)], layer="response")
    beta.set_many({f"b{i}": "x" * 100 for i in range(10)}, layer="embedding")
    for i in range(10):
        assert beta.get(f"b{i}", layer="embedding") == "x" * 100
    assert acme.delete_many(["a0", "a1"], layer="response") == 2
    acme.set("short-lived", 1, ttl=0.2, layer="response")  # swept: a ttl eviction
    gamma = main.for_tenant("gamma")  # over its byte quota: quota evictions
    gamma.set_many({f"g{i}": "y" * 200 for i in range(40)}, layer="bulk")

    delta, barrier, calls = main.for_tenant("delta"), threading.Barrier(4), []

    def slow() -> str:
        calls.append(1)
        time.sleep(0.5)
        return "computed once"

    def flight(_: int) -> str:
        barrier.wait()
        return delta.get_or_compute("same question", slow, layer="flight")

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(flight, range(4))) == ["computed once"] * 4
    assert len(calls) == 1

    for _ in range(3):
        record_saving(main, "gpt-4o", prompt_tokens=1000, completion_tokens=200)
    assert flush_savings(main)

    @ray.remote(num_cpus=0)
    def save_in_task(namespace: str) -> bool:
        for _ in range(2):
            record_saving(namespace, "claude-sonnet-4", prompt_tokens=500, completion_tokens=100)
        return flush_savings(namespace)

    assert ray.get(save_in_task.remote(main.namespace))

    from omnicache_cluster.actors.remote import semantic_index_actor
    from omnicache_cluster.actors.semantic import SemanticIndexConfig

    index = semantic_index_actor(SemanticIndexConfig(namespace=main.namespace, metrics=FAST))
    vectors = np.eye(3, 8, dtype=np.float32)
    ray.get(index.add.remote(("acme", "kns", "m1", ""), ["e1", "e2", "e3"], vectors))
    found, _prior = ray.get(index.search.remote(("acme", "kns", "m1", ""), vectors, 1))
    ray.get(index.search.remote(("acme", "kns", "m2", ""), vectors[:1], 1))  # empty scope
    _wait_for(lambda: main.stats()["evictions"]["ttl"] >= 1)
    return [max(hit[1] for hit in hits) for hits in found]


def _wide_workload(wide: CacheCluster) -> list[str]:
    """10,000 distinct keys over 12 tenants and 6 layers."""
    groups: dict[tuple[int, int], list[str]] = {}
    keys = []
    for i in range(10_000):
        key = f"key-{i:05d}"
        keys.append(key)
        groups.setdefault((i % 12, (i // 12) % 6), []).append(key)
    for (t, layer), group in sorted(groups.items()):
        client = wide.for_tenant(f"tenant{t}")
        client.set_many({k: k for k in group}, layer=f"layer{layer}")
        assert client.get_many(group, layer=f"layer{layer}") == group
    return keys


@pytest.fixture(scope="module")
def observed(ray_session, tmp_path_factory):
    l2 = L2Config(kind="disk", path=str(tmp_path_factory.mktemp("metrics-l2")))
    made = []
    try:
        main = CacheCluster.start(
            num_shards=2,
            namespace=unique("metrics"),
            metrics=FAST,
            l2=l2,
            tenant_quotas={"gamma": TenantQuota(max_bytes=4000)},
        )
        made.append(main)
        wide = CacheCluster.start(num_shards=2, namespace=unique("wide"), metrics=WIDE)
        made.append(wide)
        off = CacheCluster.start(num_shards=1, namespace=unique("off"), metrics=False)
        made.append(off)
        best = _workload(main, ray_session)
        wide_keys = _wide_workload(wide)
        off.set("k", "v")
        assert off.get("k") == "v"
        yield Observed(main, wide, off, wide_keys, best)
    finally:
        for c in made:
            c.shutdown(stop_ray=False)


# -- helpers -------------------------------------------------------------------------


def _parse(text: str, prefix: str = "") -> Series:
    from prometheus_client.parser import text_string_to_metric_families

    out: Series = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(prefix + "omnicache_"):
                out.append((s.name.removeprefix(prefix), dict(s.labels), float(s.value)))
    return out


def _total(series: Series, name: str, namespace: str, **labels: str) -> float:
    return sum(
        v
        for n, lab, v in series
        if n == name
        and lab.get("namespace") == namespace
        and all(lab.get(k) == want for k, want in labels.items())
    )


def _ground_truth(cluster: CacheCluster) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What every endpoint must show, computed from the shards' own stats now."""
    stats = cluster.stats()
    shards = stats["shards"]
    layers = [c for s in shards for by_layer in s["layers"].values() for c in by_layer.values()]
    truth = {
        ("omnicache_hits_total", ()): sum(c["hits"] for c in layers),
        ("omnicache_misses_total", ()): sum(c["misses"] for c in layers),
        ("omnicache_sets_total", ()): sum(c["sets"] for c in layers),
        ("omnicache_entries", ()): stats["entries"],
        ("omnicache_stored_bytes", ()): stats["bytes"],
        ("omnicache_l2_reads_total", ()): sum(s["l2_reads"] for s in shards),
        ("omnicache_l2_read_hits_total", ()): sum(s["l2_hits"] for s in shards),
        ("omnicache_l2_writes_total", ()): sum(s["l2_flushed"] for s in shards),
        ("omnicache_l2_errors_total", ()): sum(s["l2_errors"] for s in shards),
        ("omnicache_lease_waits_total", ()): sum(
            u["lease_waits"] for s in shards for u in s["lease_tenants"].values()
        ),
    }
    for reason, n in stats["evictions"].items():
        truth[("omnicache_evictions_total", (("reason", reason),))] = n
    return truth


def _mismatches(series: Series, namespace: str, want: dict) -> list[str]:
    bad = []
    for (name, labels), value in want.items():
        got = _total(series, name, namespace, **dict(labels))
        if got != pytest.approx(value):
            bad.append(f"{name}{dict(labels)}: {got} != {value}")
    return bad


def _ray_endpoint(ray: Any) -> str:
    node = next(n for n in ray.nodes() if n["Alive"])
    return f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback http)
        return resp.read().decode()


def _scrape_ray_until(ray: Any, ready, deadline_s: float = RAY_DEADLINE_S) -> Series:
    """Scrape Ray's endpoint until ``ready(series)`` returns no complaint."""
    url = _ray_endpoint(ray)
    deadline = time.monotonic() + deadline_s
    while True:
        series = _parse(_get(url), prefix="ray_")
        complaints = ready(series)
        if not complaints:
            return series
        assert time.monotonic() < deadline, complaints
        time.sleep(0.5)


# -- Ray's metrics endpoint ---------------------------------------------------------------


def test_ray_metrics_endpoint_shows_the_workload(observed, ray_session):
    ns = observed.main.namespace
    truth = _ground_truth(observed.main)
    assert truth[("omnicache_evictions_total", (("reason", "quota"),))] > 0
    assert truth[("omnicache_l2_reads_total", ())] > 0

    def ready(series: Series) -> list[str]:
        bad = _mismatches(series, ns, EXACT) + _mismatches(series, ns, truth)
        for model, usd in EXACT_COST.items():
            got = _total(series, "omnicache_cost_saved_usd_total", ns, model=model)
            if got != pytest.approx(usd):
                bad.append(f"cost {model}: {got} != {usd}")
        if _total(series, "omnicache_semantic_searches_total", ns, tenant="acme") != 4:
            bad.append("semantic searches not exported yet")
        return bad

    series = _scrape_ray_until(ray_session, ready)
    # Histograms: L2 latency per op, lease waits, semantic scores.
    for op in ("read", "write"):
        assert _total(series, "omnicache_l2_operation_seconds_count", ns, op=op) > 0
    waits = _total(series, "omnicache_lease_wait_seconds_count", ns, outcome="done")
    assert 1 <= waits <= truth[("omnicache_lease_waits_total", ())]
    assert _total(series, "omnicache_semantic_no_candidate_total", ns, tenant="acme") == 1
    assert _total(series, "omnicache_semantic_top_score_count", ns, tenant="acme") == 3
    # Ray rebuilds a histogram's _sum from its bucket counts (bucket midpoints), so
    # the sum is only known to within the buckets: these scores are in (0.99, 1.0].
    assert observed.best_scores == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert 3 * 0.99 <= _total(series, "omnicache_semantic_top_score_sum", ns) <= 3.0
    assert _total(series, "omnicache_semantic_vectors", ns) == 3
    for shard in ("omnicache-shard-0", "omnicache-shard-1", "coordinator"):
        assert _total(series, "omnicache_metrics_exports_total", ns, shard=shard) > 0
    # Every series Ray shows is a declared name; the metrics=False cluster shows none.
    names = {"ray_" + n for n, lab, _ in series if lab.get("namespace") == ns}
    assert names <= ray_exported_names()
    assert not [s for s in series if s[1].get("namespace") == observed.off.namespace]


def test_metrics_off_reaches_the_actors_config(observed, ray_session):
    from omnicache_cluster.actors.remote import shard_name

    handle = ray_session.get_actor(shard_name(0), namespace=observed.off.namespace)
    assert ray_session.get(handle.config.remote()).metrics is None
    handle = ray_session.get_actor(shard_name(0), namespace=observed.main.namespace)
    assert ray_session.get(handle.config.remote()).metrics == FAST
    with pytest.raises(TypeError, match="metrics must be"):
        CacheCluster.start(namespace=unique("bad"), metrics="yes")  # type: ignore[arg-type]


# -- the client side -----------------------------------------------------------------------


def test_cluster_metrics_snapshot_aggregates_the_cluster(observed):
    from omnicache_cluster.observability import PriceTable

    snap = CacheMetrics.from_cluster(observed.main)
    truth = _ground_truth(observed.main)
    assert snap.hits == truth[("omnicache_hits_total", ())]
    assert snap.misses == truth[("omnicache_misses_total", ())]
    assert snap.hit_rate == snap.hits / (snap.hits + snap.misses)
    assert snap.layers["response"]["hits"] >= 20
    assert snap.evictions["quota"] > 0
    assert snap.computes >= 1
    assert snap.tokens_saved["gpt-4o"] == {"prompt": 3000, "completion": 600}
    assert snap.calls_saved == {"gpt-4o": 3, "claude-sonnet-4": 2}
    assert snap.cost_saved_usd["gpt-4o"] == pytest.approx(EXACT_COST["gpt-4o"])
    assert snap.total_cost_saved_usd == pytest.approx(sum(EXACT_COST.values()))
    repriced = CacheMetrics.from_cluster(observed.main, PriceTable({"gpt": (1.0, 1.0)}))
    assert repriced.cost_saved_usd == {"gpt-4o": pytest.approx(3600 / 1e6), "claude-sonnet-4": 0}
    with pytest.raises(PermissionError, match="admin client"):
        CacheMetrics.from_cluster(observed.main.for_tenant("acme"))


def test_prometheus_exporter_serves_live_values_on_its_own_registry(observed):
    main, ns = observed.main, observed.main.namespace
    with PrometheusExporter(main) as first, PrometheusExporter(main, port=0) as second:
        assert first.url.startswith("http://127.0.0.1:")
        assert first.registry is not second.registry
        series = _parse(_get(first.url))
        assert not _mismatches(series, ns, EXACT)
        assert not _mismatches(series, ns, _ground_truth(main))
        assert _total(series, "omnicache_exporter_up", ns) == 1
        for model, usd in EXACT_COST.items():
            got = _total(series, "omnicache_cost_saved_usd_total", ns, model=model)
            assert got == pytest.approx(usd)
        before = _total(series, "omnicache_hits_total", ns, tenant="live")
        # Values are read at every scrape, not frozen at start-up.
        live = main.for_tenant("live")
        live.set_many({f"l{i}": i for i in range(7)})
        live.get_many([f"l{i}" for i in range(7)])
        again = _parse(_get(second.url))
        assert _total(again, "omnicache_hits_total", ns, tenant="live") == before + 7
        assert not _mismatches(again, ns, _ground_truth(main))
        assert _parse(first.render().decode()) == _parse(_get(first.url))
    with pytest.raises(OSError, match="refused"):  # closed: the port answers no more
        _get(first.url)


def test_prometheus_exporter_reports_a_dead_cluster_as_down(ray_session):
    cluster = CacheCluster.start(num_shards=1, namespace=unique("dead"), metrics=False)
    exporter = PrometheusExporter(cluster)
    try:
        cluster.shutdown(stop_ray=False)
        series = _parse(_get(exporter.url))
        assert _total(series, "omnicache_exporter_up", cluster.namespace) == 0
    finally:
        exporter.close()


def _otel_points(reader: Any) -> dict[str, tuple[Any, list[tuple[dict[str, str], float]]]]:
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = [(dict(p.attributes), p.value) for p in metric.data.data_points]
                out[metric.name] = (metric.data, points)
    return out


def _otel_total(points: dict, name: str, **labels: str) -> float:
    _data, rows = points[name]
    return sum(v for lab, v in rows if all(lab.get(k) == want for k, want in labels.items()))


def test_opentelemetry_exporter_counts_as_counters_and_changes_between_collections(observed):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
    from opentelemetry.sdk.metrics.export import Gauge as OtelGauge
    from opentelemetry.sdk.metrics.export import Sum as OtelSum

    main, ns = observed.main, observed.main.namespace
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        OpenTelemetryExporter(main, provider)
        first = _otel_points(reader)
        data, _ = first["omnicache_hits"]
        assert isinstance(data, OtelSum)
        assert data.is_monotonic
        assert data.aggregation_temporality == AggregationTemporality.CUMULATIVE
        assert isinstance(first["omnicache_entries"][0], OtelGauge)
        for (name, labels), value in EXACT.items():
            assert (
                _otel_total(first, name.removesuffix("_total"), namespace=ns, **dict(labels))
                == value
            )
        truth = _ground_truth(main)
        assert (
            _otel_total(first, "omnicache_sets", namespace=ns)
            == truth[("omnicache_sets_total", ())]
        )
        assert _otel_total(first, "omnicache_cost_saved_usd", namespace=ns) == pytest.approx(
            sum(EXACT_COST.values())
        )
        hits = _otel_total(first, "omnicache_hits", namespace=ns)
        entries = _otel_total(first, "omnicache_entries", namespace=ns)

        live = main.for_tenant("otel")
        live.set_many({f"o{i}": i for i in range(5)})
        assert live.get_many([f"o{i}" for i in range(5)]) == list(range(5))
        record_saving(main, "gpt-4o", prompt_tokens=10, completion_tokens=0)
        second = _otel_points(reader)
        assert _otel_total(second, "omnicache_hits", namespace=ns) == hits + 5
        assert _otel_total(second, "omnicache_entries", namespace=ns) == entries + 5
        assert _otel_total(second, "omnicache_hits", namespace=ns, tenant="otel") == 5
        assert _otel_total(second, "omnicache_tokens_saved", model="gpt-4o", kind="prompt") == 3010
    finally:
        provider.shutdown()


# -- label cardinality -----------------------------------------------------------------------


def _label_values(series: Series, namespace: str, label: str, **where: str) -> set[str]:
    return {
        lab[label]
        for _n, lab, _v in series
        if lab.get("namespace") == namespace
        and label in lab
        and all(lab.get(k) == v for k, v in where.items())
    }


def _assert_bounded(series: Series, namespace: str, keys: list[str], per_shard: bool) -> None:
    ours = [(n, lab, v) for n, lab, v in series if lab.get("namespace") == namespace]
    assert ours
    scopes = ["omnicache-shard-0", "omnicache-shard-1"] if per_shard else [None]
    for shard in scopes:
        where = {"shard": shard} if shard else {}
        tenants = _label_values(ours, namespace, "tenant", **where)
        layers = _label_values(ours, namespace, "layer", **where)
        assert len(tenants) <= WIDE.max_tenants + 1, tenants  # + "other"
        assert OTHER in tenants
        assert len(layers) <= WIDE.max_layers + 1, layers
        assert OTHER in layers
    ours_labels = {name for spec in ALL_METRICS for name in spec.labels}  # not Ray's own
    values = {v for _n, lab, _ in ours for k, v in lab.items() if k in ours_labels}
    assert not values & set(keys)  # a key never becomes a label value
    assert all(len(v) < 40 and "key-" not in v for v in values)
    # Bounded by the limits, whatever the number of keys: per shard 4 request metrics
    # by tenant x layer, a few by tenant, and fewer than 40 others.
    tenants, layers = WIDE.max_tenants + 2, WIDE.max_layers + 2  # + default + other
    assert len(ours) <= 2 * (4 * tenants * layers + 4 * tenants + 40), len(ours)
    # Nothing is lost in "other": the capped series still add up to every lookup.
    assert _total(ours, "omnicache_hits_total", namespace) == len(keys)
    assert _total(ours, "omnicache_sets_total", namespace) == len(keys)


def test_label_cardinality_stays_bounded_with_10000_keys(observed, ray_session):
    wide, keys = observed.wide, observed.wide_keys
    ns = wide.namespace

    def ready(series: Series) -> list[str]:
        got = _total(series, "omnicache_hits_total", ns)
        return [] if got == len(keys) else [f"hits {got} != {len(keys)}"]

    _assert_bounded(_scrape_ray_until(ray_session, ready), ns, keys, per_shard=True)
    with PrometheusExporter(wide, config=WIDE) as exporter:
        _assert_bounded(_parse(_get(exporter.url)), ns, keys, per_shard=False)

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        OpenTelemetryExporter(wide, provider, config=WIDE)
        points = _otel_points(reader)
        series = [
            (name + "_total" if name + "_total" in _COUNTERS else name, lab, v)
            for name, (_data, rows) in points.items()
            for lab, v in rows
        ]
        _assert_bounded(series, ns, keys, per_shard=False)
    finally:
        provider.shutdown()


_COUNTERS = {n.removeprefix("ray_") for n in ray_exported_names() if n.endswith("_total")}
