"""Cluster-wide numbers read in a client process: `ClusterMetrics` (a snapshot) and
`ClusterSource` (the samples the client-side exporters serve).

Both read the live actors at every call: the shards' `stats` and the coordinator's
`metrics_view`, after sending this process's pending savings (`record_saving`), so
nothing is frozen at start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omnicache_cluster.observability._samples import coordinator_samples, shard_samples
from omnicache_cluster.observability.cost import PriceTable, flush_savings
from omnicache_cluster.observability.metrics import ActorMetricsConfig, Labeler, Samples

__all__ = ["ClusterMetrics", "ClusterSource", "cluster_metrics"]


def _coordinator_view(cluster: Any, timeout_s: float) -> dict[str, Any]:
    import ray

    from omnicache_cluster.actors.remote import COORDINATOR_NAME

    flush_savings(cluster, timeout_s)
    coord = ray.get_actor(COORDINATOR_NAME, namespace=cluster.namespace)
    return ray.get(coord.metrics_view.remote(), timeout=timeout_s)  # type: ignore[no-any-return]


def _admin_stats(cluster: Any) -> dict[str, Any]:
    stats: dict[str, Any] = cluster.stats()
    if "tenant" in stats:
        raise PermissionError(
            "cluster-wide metrics need an admin client (CacheCluster.start or connect), "
            f"not one scoped to tenant {stats['tenant']!r}"
        )
    return stats


@dataclass(frozen=True)
class ClusterMetrics:
    """What the whole cluster did and saved, at one moment.

    Attributes:
        namespace: the cluster's Ray namespace.
        hits: lookups that found a value, all shards and tenants.
        misses: lookups that found nothing.
        sets: values stored.
        deletes: entries deleted or invalidated.
        evictions: evictions by reason (``lru``, ``ttl``, ``quota``).
        entries: entries held now.
        bytes: bytes held now.
        computes: misses that one caller computed (single-flight leaders).
        lease_waits: callers that waited for another caller's compute.
        layers: ``layer -> {hits, misses, sets}``.
        tokens_saved: ``model -> {prompt, completion}`` tokens not spent.
        calls_saved: ``model -> LLM calls`` answered from the cache.
        cost_saved_usd: ``model -> US dollars`` not spent.
    """

    namespace: str
    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    evictions: dict[str, int] = field(default_factory=dict)
    entries: int = 0
    bytes: int = 0
    computes: int = 0
    lease_waits: int = 0
    layers: dict[str, dict[str, int]] = field(default_factory=dict)
    tokens_saved: dict[str, dict[str, int]] = field(default_factory=dict)
    calls_saved: dict[str, int] = field(default_factory=dict)
    cost_saved_usd: dict[str, float] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        """Hits per lookup (0.0 before any lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @property
    def miss_rate(self) -> float:
        """Misses per lookup (0.0 before any lookup)."""
        lookups = self.hits + self.misses
        return self.misses / lookups if lookups else 0.0

    @property
    def total_tokens_saved(self) -> int:
        """Prompt and completion tokens saved, all models."""
        return sum(t["prompt"] + t["completion"] for t in self.tokens_saved.values())

    @property
    def total_cost_saved_usd(self) -> float:
        """US dollars saved, all models."""
        return sum(self.cost_saved_usd.values())

    def as_dict(self) -> dict[str, Any]:
        """Return every field and derived rate as plain data (for a CLI or JSON)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["hit_rate"] = self.hit_rate
        out["miss_rate"] = self.miss_rate
        out["total_tokens_saved"] = self.total_tokens_saved
        out["total_cost_saved_usd"] = self.total_cost_saved_usd
        return out


def _sum_layers(per_shard: list[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    layers: dict[str, dict[str, int]] = {}
    for s in per_shard:
        for by_layer in s.get("layers", {}).values():
            for layer, c in by_layer.items():
                into = layers.setdefault(layer, {"hits": 0, "misses": 0, "sets": 0})
                for k in into:
                    into[k] += int(c.get(k, 0))
    return layers


def cluster_metrics(
    cluster: Any, prices: PriceTable | None = None, *, timeout_s: float = 10.0
) -> ClusterMetrics:
    """Return a `ClusterMetrics` snapshot of ``cluster`` (an admin `CacheCluster`).

    Args:
        cluster: the cluster's admin client.
        prices: re-price the saved tokens with this table; by default each saving
            keeps the cost its recording process computed.
        timeout_s: how long the coordinator may take to answer.

    Raises:
        PermissionError: ``cluster`` is scoped to one tenant.
    """
    stats = _admin_stats(cluster)
    shards = stats["shards"]
    view = _coordinator_view(cluster, timeout_s)
    computes = lease_waits = 0
    for usage in [*(s.get("lease_tenants", {}) for s in shards), view["tenants"]]:
        computes += sum(int(u.get("computes", 0)) for u in usage.values())
        lease_waits += sum(int(u.get("lease_waits", 0)) for u in usage.values())
    savings = view["savings"]
    tokens = {
        m: {"prompt": int(r["prompt_tokens"]), "completion": int(r["completion_tokens"])}
        for m, r in savings.items()
    }
    if prices is None:
        cost = {m: float(r["cost_usd"]) for m, r in savings.items()}
    else:
        cost = {m: prices.cost(m, t["prompt"], t["completion"]) for m, t in tokens.items()}
    # Lookups as the shards count them per tenant and layer (an L2 read-through hit is
    # a hit), not the L1 store's own counters.
    layers = _sum_layers(shards)
    return ClusterMetrics(
        namespace=cluster.namespace,
        hits=sum(c["hits"] for c in layers.values()),
        misses=sum(c["misses"] for c in layers.values()),
        sets=sum(c["sets"] for c in layers.values()),
        deletes=int(stats.get("deletes", 0)),
        evictions=dict(stats.get("evictions", {})),
        entries=int(stats["entries"]),
        bytes=int(stats["bytes"]),
        computes=computes,
        lease_waits=lease_waits,
        layers=layers,
        tokens_saved=tokens,
        calls_saved={m: int(r["calls"]) for m, r in savings.items()},
        cost_saved_usd=cost,
    )


class ClusterSource:
    """The samples of a whole cluster, read live at each `samples` call, with label
    limits kept across calls (so a counter's series never changes label).

    Args:
        cluster: the cluster's admin client.
        config: label limits (tenants, layers, models).
        timeout_s: how long the coordinator may take to answer.
    """

    def __init__(
        self, cluster: Any, config: ActorMetricsConfig | None = None, timeout_s: float = 10.0
    ) -> None:
        self.cluster = cluster
        self.namespace: str = cluster.namespace
        self._labels = Labeler(config)
        self._timeout = timeout_s
        self._lock = threading.Lock()

    def samples(self) -> Samples:
        """Return every counter and gauge sample of the cluster now.

        Raises:
            PermissionError: the client is scoped to one tenant.
        """
        stats = _admin_stats(self.cluster)
        view = _coordinator_view(self.cluster, self._timeout)
        out: Samples = {}
        with self._lock:  # the limiters are shared by concurrent scrapes
            parts = [shard_samples(s, self.namespace, self._labels) for s in stats["shards"]]
            parts.append(coordinator_samples(view, self.namespace, self._labels))
        for part in parts:
            for key, value in part.items():
                out[key] = out.get(key, 0.0) + value
        return out
