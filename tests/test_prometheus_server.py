"""The shipped Prometheus config and Grafana dashboard against a real Prometheus server.

A real `prometheus` binary (found or fetched by ``scripts/test.sh``, see
``scripts/_prometheus.sh``) runs on 127.0.0.1 with ``deploy/prometheus/prometheus.yml``
as shipped, with three changes that only point it at this test run: the service
discovery file is a copy of this Ray session's file (behind a link, as Ray keeps it,
and stale when Prometheus starts: the shipped ``refresh_interval`` must pick up the
real one), the exporter target is this test's `PrometheusExporter` port, and scrapes
come every second instead of every 10 s. After two rounds of a known workload (L2
reads and writes, single-flight with waiters, byte and compute quotas, semantic
searches, recorded savings), every query of ``deploy/grafana/omnicache-dashboard.json``
must parse, and every panel whose feature the workload used must return data with the
labels its legend names and plausible values; the hit rate must equal the workload's.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from omnicache_cluster import (
    ActorMetricsConfig,
    CacheCluster,
    L2Config,
    PrometheusExporter,
    QuotaExceeded,
    TenantQuota,
    record_saving,
)
from omnicache_cluster.core.ring import DEFAULT_SLOTS
from omnicache_cluster.observability import flush_savings
from tests.conftest import unique

pytestmark = pytest.mark.ray

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SCRAPE_S = 1.0
DEADLINE_S = 120.0

# Queries whose feature the workload does not use: no outage or L2 error, no corrupt record,
# no lease that outlives its leader, no reads skipped while L2 is down. Ray exports a
# counter only once it has been incremented, so these return nothing by design.
EMPTY_BY_DESIGN = {
    "ray_omnicache_l2_errors_total",
    "ray_omnicache_l2_corrupt_total",
    "ray_omnicache_l2_degraded_writes_total",
    "ray_omnicache_l2_dropped_writes_total",
    "ray_omnicache_l2_skipped_reads_total",
    "ray_omnicache_leases_expired_total",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prometheus_bin() -> str:
    path = os.environ.get("OMNICACHE_PROMETHEUS_BIN") or shutil.which("prometheus")
    if path:
        return path
    why = os.environ.get("OMNICACHE_PROMETHEUS_MISSING") or (
        "no prometheus binary: run the suite through ./scripts/test.sh, which finds or "
        "fetches one, or set OMNICACHE_PROMETHEUS_BIN"
    )
    if os.environ.get("OMNICACHE_ALLOW_NO_PROMETHEUS") == "1":
        pytest.skip(f"NO PROMETHEUS SERVER, the shipped config is untested: {why}")
    pytest.fail(f"no Prometheus server to test the shipped config with: {why}")


class Prometheus:
    """A real Prometheus server on 127.0.0.1 and its HTTP API."""

    def __init__(self, binary: str, config: Path, data: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data / "prometheus.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self._wait(lambda: self._ready(), "Prometheus to answer")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited: {self.log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310
                return resp.status == 200
        except OSError:
            return False

    def _wait(self, ready: Any, what: str, deadline_s: float = DEADLINE_S) -> Any:
        deadline = time.monotonic() + deadline_s
        while True:
            got = ready()
            if got:
                return got
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.25)

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback)
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        return body

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = self.api("query", **params)
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]

    def value(self, expr: str) -> float | None:
        rows = self.query(expr)
        return float(rows[0]["value"][1]) if rows else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


def _session_discovery_file() -> Path:
    import ray

    node = ray._private.worker.global_worker.node  # this test run's Ray, not /tmp/ray's newest
    path = Path(node.get_session_dir_path()) / "prom_metrics_service_discovery.json"
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists():
        assert time.monotonic() < deadline, (
            f"Ray wrote no {path.name}: the test session's Ray needs its dashboard "
            "(include_dashboard=True), which writes the discovery file"
        )
        time.sleep(0.25)
    return path


def _config(tmp: Path, exporter_port: int) -> tuple[Path, Path, Path]:
    """The shipped config, pointed at this run; returns (config, link, real file)."""
    shipped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    ray_job = next(j for j in shipped["scrape_configs"] if j["job_name"] == "ray")
    exporter_job = next(j for j in shipped["scrape_configs"] if j["job_name"] != "ray")
    # What the fix is: discovery re-read every few seconds, not every 5 minutes.
    (sd,) = ray_job["file_sd_configs"]
    assert sd["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    assert sd.get("refresh_interval") == "5s", "file discovery must be refreshed often"
    # Ray keeps the file inside the session folder behind a link: so do we, starting
    # with a stale copy that names a port nobody listens on.
    session = tmp / "session_latest"
    session.mkdir()
    real = session / "prom_metrics_service_discovery.json"
    real.write_text(
        json.dumps([{"labels": {"job": "ray"}, "targets": [f"127.0.0.1:{_free_port()}"]}])
    )
    link = tmp / "prom_metrics_service_discovery.json"
    link.symlink_to(real)
    sd["files"] = [str(link)]
    exporter_job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter_port}"]}]
    shipped["global"]["scrape_interval"] = f"{SCRAPE_S:g}s"
    shipped["global"]["evaluation_interval"] = f"{SCRAPE_S:g}s"
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(shipped))
    return config, link, real


def _round(main: CacheCluster, ray: Any, r: int) -> dict[str, int]:
    """One round of the known workload on fresh keys; returns what it did."""
    acme, beta = main.for_tenant("acme"), main.for_tenant("beta")
    acme.set_many({f"r{r}-a{i}": i for i in range(30)}, layer="response")
    got = acme.get_many(
        [f"r{r}-a{i}" for i in range(30)] + [f"r{r}-x{i}" for i in range(10)], layer="response"
    )
    assert sum(v == i for i, v in enumerate(got[:30])) == 30
    beta.set_many({f"r{r}-b{i}": "x" * 100 for i in range(10)}, layer="embedding")
    assert beta.get_many([f"r{r}-b{i}" for i in range(10)], layer="embedding") == ["x" * 100] * 10
    assert acme.delete_many([f"r{r}-a0", f"r{r}-a1"], layer="response") == 2
    acme.set(f"r{r}-short", 1, ttl=0.2, layer="response")
    gamma = main.for_tenant("gamma")  # over its byte quota: evicted, then read from L2
    gamma.set_many({f"r{r}-g{i}": "y" * 200 for i in range(40)}, layer="bulk")
    assert gamma.get_many([f"r{r}-g{i}" for i in range(40)], layer="bulk") == ["y" * 200] * 40

    delta, barrier, calls = main.for_tenant("delta"), threading.Barrier(4), []

    def slow() -> str:
        calls.append(1)
        time.sleep(0.5)
        return "computed once"

    def flight(_: int) -> str:
        barrier.wait()
        return delta.get_or_compute(f"r{r}-same question", slow, layer="flight")

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(flight, range(4))) == ["computed once"] * 4
    assert len(calls) == 1

    # A compute quota of 1 per minute: at most one compute a round, the rest refused.
    omega, refused = main.for_tenant("omega"), 0
    for q in (1, 2):
        try:
            omega.get_or_compute(f"r{r}-q{q}", lambda q=q: q, layer="flight")
        except QuotaExceeded:
            refused += 1
    assert refused >= 1

    for _ in range(3):
        record_saving(main, "gpt-4o", prompt_tokens=1000, completion_tokens=200)
    assert flush_savings(main)

    from omnicache_cluster.actors.remote import semantic_index_actor
    from omnicache_cluster.actors.semantic import SemanticIndexConfig

    index = semantic_index_actor(
        SemanticIndexConfig(namespace=main.namespace, metrics=ActorMetricsConfig(interval_s=0.2))
    )
    vectors = np.eye(3, 8, dtype=np.float32)
    ray.get(index.add.remote(("acme", "kns", "m1", ""), [f"r{r}-e{i}" for i in range(3)], vectors))
    ray.get(index.search.remote(("acme", "kns", "m1", ""), vectors, 1))
    ray.get(index.search.remote(("acme", "kns", f"none{r}", ""), vectors[:1], 1))
    return {"vectors": 3}  # and 4 searches (one per query vector)


PRIMED = {
    "acme": "response",
    "beta": "embedding",
    "gamma": "bulk",
    "delta": "flight",
    "omega": "flight",
}


def _prime(main: CacheCluster) -> None:
    """Look up absent keys of every tenant and layer the rounds use, on both shards.

    Prometheus computes a rate from the samples in its window: a series that first
    appears inside the window (a tenant's first miss on a shard) loses its first
    value. Priming makes every series the rounds touch exist before round 1.
    """
    for tenant, layer in PRIMED.items():
        client = main.for_tenant(tenant)
        keys = [f"prime-{i}" for i in range(16)]
        ring = main._state.ring
        assert {ring.owner_index(client.key(k, layer)) for k in keys} == {0, 1}
        client.get_many(keys, layer=layer)


def _counts(cluster: CacheCluster) -> tuple[int, int]:
    """(hits, misses) of the cluster's shards, all tenants and layers."""
    shards = cluster.stats()["shards"]
    layers = [c for s in shards for by_layer in s["layers"].values() for c in by_layer.values()]
    return sum(c["hits"] for c in layers), sum(c["misses"] for c in layers)


def _dashboard_targets() -> list[tuple[str, str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "omnicache-dashboard.json").read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"], target.get("legendFormat", "")))
    return out


@pytest.fixture(scope="module")
def scraped(ray_session, tmp_path_factory):
    binary = _prometheus_bin()
    tmp = tmp_path_factory.mktemp("prometheus")
    main = CacheCluster.start(
        num_shards=2,
        namespace=unique("prom"),
        metrics=ActorMetricsConfig(interval_s=0.2),
        l2=L2Config(kind="disk", path=str(tmp / "l2")),
        tenant_quotas={
            "gamma": TenantQuota(max_bytes=4000),
            "omega": TenantQuota(computes_per_minute=1, policy="raise"),
        },
    )
    exporter = PrometheusExporter(main, port=_free_port())
    config, _link, real = _config(tmp, exporter.port)
    prom = Prometheus(binary, config, tmp)
    try:
        # Ray replaces the session's file behind the link; no change notification
        # reaches Prometheus, so only the shipped refresh_interval can pick it up.
        started = time.monotonic()
        replacement = real.with_suffix(".tmp")
        replacement.write_text(_session_discovery_file().read_text())
        os.replace(replacement, real)

        def ray_up() -> bool:
            rows = prom.query('up{job="ray"}')
            return bool(rows) and all(r["value"][1] == "1" for r in rows)

        prom._wait(ray_up, "Ray's targets from the discovery file", deadline_s=60)
        discovered_s = time.monotonic() - started

        ns = main.namespace
        sel = f'namespace="{ns}"'
        _prime(main)
        _round(main, ray_session, 0)
        after0 = _counts(main)
        # Round 0 makes every series exist; wait until Prometheus holds all of it.
        prom._wait(
            lambda: prom.value(f"sum(ray_omnicache_requests_total{{{sel}}})") == float(sum(after0)),
            "round 0 in Prometheus",
        )
        time.sleep(2.5 * SCRAPE_S)  # two samples of round 0 stored
        start = time.time() - SCRAPE_S
        _round(main, ray_session, 1)
        after1 = _counts(main)
        prom._wait(
            lambda: prom.value(f"sum(ray_omnicache_requests_total{{{sel}}})") == float(sum(after1)),
            "round 1 in Prometheus",
        )
        prom._wait(
            lambda: (
                prom.value(f"sum(ray_omnicache_calls_saved_total{{{sel}}})") == 6.0
                and prom.value(f"sum(ray_omnicache_semantic_searches_total{{{sel}}})") == 8.0
            ),
            "savings and semantic searches in Prometheus",
        )
        prom._wait(
            lambda: (
                prom.value(f'sum(omnicache_hits_total{{job="omnicache-exporter",{sel}}})')
                == float(after1[0])
            ),
            "the exporter's hits in Prometheus",
        )
        time.sleep(1.5 * SCRAPE_S)  # one more sample after the last change
        end = time.time()
        window = f"{math.ceil(end - start)}s"
        results = {}
        for title, expr, legend in _dashboard_targets():
            concrete = (
                expr.replace("$__rate_interval", window)
                .replace("$__range", window)
                .replace('=~"$namespace"', f'=~"{ns}"')
            )
            results[(title, expr)] = (legend, prom.query(concrete, at=end))
        yield {
            "main": main,
            "prom": prom,
            "results": results,
            "discovered_s": discovered_s,
            "delta": (after1[0] - after0[0], after1[1] - after0[1]),
        }
    finally:
        prom.stop()
        exporter.close()
        main.shutdown(stop_ray=False)


def test_discovery_refresh_finds_ray_within_seconds(scraped):
    # Without refresh_interval, Prometheus re-reads the replaced file after 5 minutes.
    assert scraped["discovered_s"] < 30


def test_every_dashboard_query_parses_and_used_panels_have_data(scraped):
    results = scraped["results"]
    assert len(results) == len(_dashboard_targets()) >= 40
    empty = []
    for (title, expr), (legend, rows) in results.items():
        metric = re.search(r"ray_omnicache_[a-z0-9_]+?(?:_bucket|_sum|_count)?(?=[{\[])", expr)
        assert metric, expr
        base = re.sub(r"_(bucket|sum|count)$", "", metric.group(0))
        if base in EMPTY_BY_DESIGN or metric.group(0) in EMPTY_BY_DESIGN:
            continue
        if not rows:
            empty.append(f"{title}: {expr}")
            continue
        for label in re.findall(r"\{\{(\w+)\}\}", legend):
            assert all(label in r["metric"] and r["metric"][label] for r in rows), (
                f"{title}: legend {legend!r} names {label}, results have {rows}"
            )
        for r in rows:
            v = float(r["value"][1])
            assert math.isnan(v) or v >= 0, f"{title}: {v}"
    assert not empty, "panels without data:\n" + "\n".join(empty)


def _one(scraped: dict, title: str, legend: str) -> list[dict[str, Any]]:
    rows = [
        rows
        for (t, _expr), (leg, rows) in scraped["results"].items()
        if t == title and leg == legend
    ]
    assert len(rows) == 1, (title, legend)
    return rows[0]


def test_hit_rate_panel_equals_the_workloads(scraped):
    hits, misses = scraped["delta"]
    (row,) = _one(scraped, "Hit rate", "hit rate")
    assert float(row["value"][1]) == pytest.approx(hits / (hits + misses), abs=1e-6)
    by_tenant = {
        r["metric"]["tenant"]: float(r["value"][1])
        for r in _one(scraped, "Hit rate by tenant", "{{tenant}}")
    }
    assert by_tenant["beta"] == pytest.approx(1.0)
    assert by_tenant["acme"] == pytest.approx(30 / 40)  # 30 hits, 10 misses a round


def test_gauges_and_labels_match_the_cluster(scraped):
    stats = scraped["main"].stats()
    (entries,) = _one(scraped, "Entries held", "entries")
    # The ttl entry of round 1 may have been swept since the last sample.
    assert stats["entries"] <= float(entries["value"][1]) <= stats["entries"] + 1
    shards = {r["metric"]["shard"] for r in _one(scraped, "Sets / s by shard", "{{shard}}")}
    assert shards == {"omnicache-shard-0", "omnicache-shard-1"}
    tenants = {r["metric"]["tenant"] for r in _one(scraped, "Bytes held by tenant", "{{tenant}}")}
    assert {"acme", "beta", "gamma"} <= tenants
    evictions = {
        r["metric"]["reason"] for r in _one(scraped, "Evictions / s by reason", "{{reason}}")
    }
    assert "quota" in evictions
    (throttled,) = _one(scraped, "Computes and lease waits / s", "throttled by quota")
    assert float(throttled["value"][1]) > 0
    (vectors,) = _one(scraped, "Vectors indexed", "vectors")
    assert float(vectors["value"][1]) == 6
    slots = _one(scraped, "Ring slots by shard", "{{shard}}")
    assert sum(float(r["value"][1]) for r in slots) == DEFAULT_SLOTS
    (tokens,) = _one(scraped, "Tokens saved", "tokens")
    assert float(tokens["value"][1]) > 0
    calls = {
        r["metric"]["model"]: float(r["value"][1])
        for r in _one(scraped, "Tokens and calls saved / s", "{{model}} calls")
    }
    assert calls["gpt-4o"] > 0


def test_exporter_target_is_scraped(scraped):
    prom, ns = scraped["prom"], scraped["main"].namespace
    (up,) = prom.query('up{job="omnicache-exporter"}')
    assert up["value"][1] == "1"
    hits = prom.value(f'sum(omnicache_hits_total{{job="omnicache-exporter",namespace="{ns}"}})')
    assert hits is not None
    assert hits > 0
