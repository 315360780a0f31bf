"""Metrics without Ray: names, label limits, the recorder, prices, the stats mapping and
the deploy/ files (the live endpoints are in test_metrics_live.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from omnicache_cluster.observability import metrics as m
from omnicache_cluster.observability._samples import coordinator_samples, shard_samples
from omnicache_cluster.observability.cost import (
    DEFAULT_PRICES,
    ModelPrice,
    PriceTable,
    SavingsBook,
    price_table,
    record_saving,
    set_price_table,
)
from omnicache_cluster.observability.metrics import (
    ALL_METRICS,
    OTHER,
    ActorMetricsConfig,
    Labeler,
    LabelLimiter,
    MetricSpec,
    MetricsRecorder,
    ray_exported_names,
)
from omnicache_cluster.observability.snapshot import ClusterMetrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "omnicache-dashboard.json"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"


# -- names ---------------------------------------------------------------------------


def test_every_metric_is_declared_once_and_follows_prometheus_conventions():
    names = [spec.name for spec in ALL_METRICS]
    assert len(names) == len(set(names))
    for spec in ALL_METRICS:
        assert re.fullmatch(r"omnicache_[a-z0-9_]+", spec.name), spec.name
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        if spec.unit == "s":
            assert spec.name.removesuffix("_total").endswith("_seconds"), spec.name
        if spec.unit == "By":
            assert spec.name.endswith("_bytes"), spec.name
        assert spec.labels[0] == "namespace"
        # Bounded labels only: never a key, a tag or a free-form message.
        assert set(spec.labels) <= {
            "namespace",
            "shard",
            "tenant",
            "layer",
            "reason",
            "model",
            "kind",
            "op",
            "outcome",
        }
    assert {s.name for s in ALL_METRICS if s.kind == "histogram"} == {
        "omnicache_l2_operation_seconds",
        "omnicache_lease_wait_seconds",
        "omnicache_semantic_top_score",
    }


def test_spec_refuses_names_that_break_conventions():
    with pytest.raises(ValueError, match="naming conventions"):
        MetricSpec("omnicache_hits", "counter", "no _total", ("namespace",))
    with pytest.raises(ValueError, match="naming conventions"):
        MetricSpec("omnicache_level_total", "gauge", "a gauge named like a counter", ())
    with pytest.raises(ValueError, match="buckets"):
        MetricSpec("omnicache_x_seconds", "histogram", "no buckets", ())
    with pytest.raises(ValueError, match="kind"):
        MetricSpec("omnicache_x", "summary", "unknown kind", ())  # type: ignore[arg-type]


def test_ray_exported_names_expand_histograms_and_skip_client_only_metrics():
    names = ray_exported_names()
    assert "ray_omnicache_hits_total" in names
    assert "ray_omnicache_lease_wait_seconds_bucket" in names
    assert "ray_omnicache_lease_wait_seconds_count" in names
    assert "ray_omnicache_lease_wait_seconds" not in names
    assert "ray_omnicache_exporter_up" not in names


def test_actor_metrics_config_validates():
    with pytest.raises(ValueError, match="interval_s"):
        ActorMetricsConfig(interval_s=0)
    with pytest.raises(ValueError, match="max_tenants"):
        ActorMetricsConfig(max_tenants=0)
    with pytest.raises(ValueError, match="max_layers"):
        ActorMetricsConfig(max_layers=True)


# -- label limits --------------------------------------------------------------------


def test_label_limiter_is_sticky_and_bounded():
    lim = LabelLimiter(2, keep=("default",))
    assert [lim(v) for v in ("a", "b", "c", "a", "default", "d", "b")] == [
        "a",
        "b",
        OTHER,
        "a",
        "default",
        OTHER,
        "b",
    ]
    assert len(lim) == 3
    # 10,000 distinct values still give at most limit + other labels.
    fresh = LabelLimiter(2, keep=("default",))
    assert {fresh(f"tenant-{i}") for i in range(10_000)} == {"tenant-0", "tenant-1", OTHER}


def test_label_limiter_never_hands_out_other_as_a_value_of_its_own():
    lim = LabelLimiter(5)
    assert lim(OTHER) == OTHER
    assert len(lim) == 0


# -- the recorder --------------------------------------------------------------------


def test_recorder_drain_keeps_counts_and_sums_exact_per_bucket():
    rec = MetricsRecorder(ActorMetricsConfig(), "ns", "shard-0")
    values = [0.0004, 0.0004, 0.003, 0.2, 7.0]  # the last one is past every bucket
    for v in values:
        rec.l2_op("read", v)
    rec.l2_op("write", 0.001)
    drained = {labels: pairs for spec, labels, pairs in rec.drain()}
    read = drained[("ns", "shard-0", "read")]
    assert sum(c for _, c in read) == len(values)
    assert sum(mean * c for mean, c in read) == pytest.approx(sum(values))
    bounds = m.L2_SECONDS.buckets
    for mean, _count in read:  # each mean lands in the bucket its values came from
        assert any(abs(mean - v) < 1e-12 for v in values)
        assert mean > bounds[-1] or any(mean <= b for b in bounds)
    assert drained[("ns", "shard-0", "write")] == [(0.001, 1)]
    assert rec.drain() == []  # drained means forgotten


def test_recorder_counts_semantic_searches_and_caps_tenants():
    rec = MetricsRecorder(ActorMetricsConfig(max_tenants=1), "ns", "semantic-index")
    rec.semantic_search("acme", [0.91, None, 0.5])
    rec.semantic_search("beta", [0.99])  # past the cap: reported as "other"
    counts = rec.counters()
    assert counts[(m.SEMANTIC_SEARCHES.name, ("ns", "acme"))] == 3
    assert counts[(m.SEMANTIC_EMPTY.name, ("ns", "acme"))] == 1
    assert counts[(m.SEMANTIC_SEARCHES.name, ("ns", OTHER))] == 1
    scores = {labels: pairs for spec, labels, pairs in rec.drain()}
    assert sorted(scores) == [("ns", "acme"), ("ns", OTHER)]
    assert sum(c for _, c in scores[("ns", "acme")]) == 2


def test_metrics_off_records_nothing_and_leaves_the_store_unwrapped(tmp_path):
    from omnicache_cluster.backends.disk import AsyncDiskStore, DiskStore

    rec = MetricsRecorder.for_config(None, "ns", "shard-0")
    assert not rec.enabled
    rec.lease_wait("acme", "done", 0.5)
    rec.semantic_search("acme", [0.9])
    store = AsyncDiskStore(DiskStore(str(tmp_path)))
    assert rec.timed(store) is store
    assert rec.counters() == {}
    assert rec.drain() == []


async def test_timed_store_times_every_call_of_a_real_store(tmp_path):
    from omnicache_cluster.backends.base import Record
    from omnicache_cluster.backends.disk import AsyncDiskStore, DiskStore
    from omnicache_cluster.core.codec import Serializer

    rec = MetricsRecorder(ActorMetricsConfig(), "ns", "shard-0")
    store = rec.timed(AsyncDiskStore(DiskStore(str(tmp_path))))
    v1, v2 = Serializer().dumps("v1"), Serializer().dumps("v2")
    await store.set_many([("k1", Record(v1, tags=("t",))), ("k2", Record(v2))])
    got = await store.get_many(["k1", "nope"])
    assert [r.value if r else None for r in got] == [v1, None]
    assert await store.exists_many(["k2"]) == [True]
    assert await store.tagged("t") == ["k1"]
    assert sorted(await store.keys("k")) == ["k1", "k2"]
    assert await store.delete_many(["k1"]) == [True]
    assert isinstance(store.stats(), dict)
    await store.close()
    ops = {labels[2]: sum(c for _, c in pairs) for _spec, labels, pairs in rec.drain()}
    assert ops == {"write": 1, "read": 1, "exists": 1, "scan": 2, "delete": 1}


# -- prices and savings --------------------------------------------------------------


def test_price_table_matches_exact_names_then_the_longest_prefix():
    table = PriceTable({"gpt-4o": (2.5, 10.0), "gpt-4o-mini": ModelPrice(0.15, 0.6)})
    assert table.price("gpt-4o-mini-2024-07-18") == ModelPrice(0.15, 0.6)
    assert table.price("gpt-4o-2024-08-06") == ModelPrice(2.5, 10.0)
    assert table.price("llama-3") is None
    assert table.cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(3.5)
    assert table.cost("llama-3", 10**6, 10**6) == 0.0
    cheaper = table.with_prices({"gpt-4o": (1.0, 1.0)})
    assert cheaper.cost("gpt-4o", 10**6, 10**6) == pytest.approx(2.0)
    assert table.cost("gpt-4o", 10**6, 0) == pytest.approx(2.5)  # unchanged
    assert DEFAULT_PRICES.price("claude-sonnet-4-20250514") is not None


def test_prices_and_savings_reject_bad_input():
    with pytest.raises(ValueError, match="input_per_mtok"):
        ModelPrice(-1.0, 1.0)
    with pytest.raises(ValueError, match="model names"):
        PriceTable({"": (1.0, 1.0)})
    with pytest.raises(TypeError, match="PriceTable"):
        set_price_table({"gpt-4o": (1.0, 1.0)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="model"):
        record_saving("ns", "", 1, 1)
    with pytest.raises(ValueError, match="prompt_tokens"):
        record_saving("ns", "gpt-4o", -1, 1)
    with pytest.raises(ValueError, match="completion_tokens"):
        record_saving("ns", "gpt-4o", 1, 2.5)  # type: ignore[arg-type]


def test_process_price_table_can_be_replaced():
    before = price_table()
    try:
        set_price_table(PriceTable({"mine": (1.0, 0.0)}))
        assert price_table().cost("mine", 10**6) == pytest.approx(1.0)
    finally:
        set_price_table(before)


def test_savings_book_sums_per_model_with_a_bounded_number_of_models():
    book = SavingsBook(max_models=2)
    book.add([("a", 1, 10, 5, 0.5), ("b", 1, 1, 1, 0.1), ("a", 2, 10, 5, 0.5)])
    book.add([(f"model-{i}", 1, 1, 0, 0.0) for i in range(1000)])
    snap = book.snapshot()
    assert set(snap) == {"a", "b", OTHER}
    assert snap["a"] == {"calls": 3, "prompt_tokens": 20, "completion_tokens": 10, "cost_usd": 1.0}
    assert snap[OTHER]["calls"] == 1000


def test_cluster_metrics_derives_rates_and_totals():
    snap = ClusterMetrics(
        namespace="ns",
        hits=3,
        misses=1,
        tokens_saved={"a": {"prompt": 10, "completion": 5}, "b": {"prompt": 1, "completion": 0}},
        cost_saved_usd={"a": 0.5, "b": 0.25},
    )
    assert (snap.hit_rate, snap.miss_rate) == (0.75, 0.25)
    assert snap.total_tokens_saved == 16
    assert snap.total_cost_saved_usd == 0.75
    assert ClusterMetrics(namespace="ns").hit_rate == 0.0
    assert snap.as_dict()["hit_rate"] == 0.75


# -- from stats to samples -----------------------------------------------------------


async def test_shard_samples_match_a_real_shards_stats():
    from omnicache_cluster.actors.shard import ShardActor, ShardConfig

    config = ShardConfig(
        name="s0", namespace="ns", coordinator="c", max_bytes=1 << 20, metrics=None
    )
    shard = ShardActor(config, 1, ("s0",))
    keys = [
        f"app:{t}:{layer}:{i:032x}"
        for t in ("acme", "beta")
        for layer in ("a", "b")
        for i in range(3)
    ]
    await shard.set_many([(k, b"v" * 10, None, ()) for k in keys])
    await shard.get_many([*keys, "app:acme:a:" + "f" * 32])
    await shard.delete_many(keys[:2])
    stats = await shard.stats()
    samples = shard_samples(stats, "ns", Labeler(ActorMetricsConfig(max_tenants=1)))

    def total(spec):
        return sum(v for (name, _), v in samples.items() if name == spec.name)

    assert total(m.HITS) == len(keys)
    assert total(m.MISSES) == 1
    assert total(m.REQUESTS) == len(keys) + 1
    assert total(m.SETS) == len(keys)
    assert total(m.DELETES) == 2
    assert total(m.ENTRIES) == stats["entries"] == len(keys) - 2
    assert total(m.STORED_BYTES) == stats["bytes"]
    assert total(m.CAPACITY_BYTES) == 1 << 20
    tenants = {labels[2] for (name, labels) in samples if name == m.HITS.name}
    assert tenants == {"acme", OTHER}  # max_tenants=1: beta reports as other
    assert all(v >= 0 for v in samples.values())


def test_coordinator_samples_cover_leases_throttling_and_savings():
    view = {
        "tenants": {"acme": {"computes": 3, "computing": 0, "throttled": 2, "lease_waits": 4}},
        "leases": {"in_flight": 1, "waiting": 2, "acquired": 3, "expired": 1},
        "savings": {
            "gpt-4o": {"calls": 2, "prompt_tokens": 100, "completion_tokens": 10, "cost_usd": 0.1}
        },
    }
    s = coordinator_samples(view, "ns", Labeler())
    assert s[(m.COMPUTES.name, ("ns", "coordinator", "acme"))] == 3
    assert s[(m.LEASE_WAITS.name, ("ns", "coordinator", "acme"))] == 4
    assert s[(m.THROTTLED.name, ("ns", "acme"))] == 2
    assert s[(m.LEASES_IN_FLIGHT.name, ("ns", "coordinator"))] == 1
    assert s[(m.TOKENS_SAVED.name, ("ns", "gpt-4o", "prompt"))] == 100
    assert s[(m.TOKENS_SAVED.name, ("ns", "gpt-4o", "completion"))] == 10
    assert s[(m.COST_SAVED.name, ("ns", "gpt-4o"))] == 0.1


# -- deploy/ ---------------------------------------------------------------------------


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_dashboard_is_valid_and_queries_only_exported_metrics():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "omnicache-cluster"
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert set(p["gridPos"]) == {"x", "y", "w", "h"}
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] != "row":
            assert p["targets"], p["title"]
    exported = ray_exported_names()
    queried = set()
    for expr in _dashboard_exprs():
        assert expr.count("(") == expr.count(")"), expr
        names = re.findall(r"\b(?:ray_)?omnicache_[a-z0-9_]+", expr)
        assert names, expr
        queried.update(names)
    assert queried <= exported, sorted(queried - exported)
    # Every in-actor metric has a panel, bar the exporter's own export count.
    covered = {
        n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in queried
    }
    wanted = {"ray_" + s.name for s in ALL_METRICS if not s.client_only}
    assert wanted - covered <= {"ray_omnicache_metrics_exports_total"}


def test_prometheus_config_scrapes_ray_service_discovery_and_the_exporter():
    import yaml

    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    files = jobs["ray"]["file_sd_configs"][0]["files"]
    assert files == ["/tmp/ray/prom_metrics_service_discovery.json"]
    targets = jobs["omnicache-exporter"]["static_configs"][0]["targets"]
    assert all(re.fullmatch(r"[\w.\-]+:\d+", t) for t in targets)
