"""Turn the actors' stats into metric samples (cumulative counters and levels).

One mapping, used by the in-actor Ray exporter and by the client-side exporters, so
that ``omnicache_hits_total`` means the same thing on every endpoint. Pure Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omnicache_cluster.observability import metrics as m
from omnicache_cluster.observability.metrics import Labeler, MetricSpec, Samples

__all__ = ["coordinator_samples", "semantic_samples", "shard_samples"]

# Shard stats field -> counter, for the L2 counters (``l2_*`` fields, present with L2).
_L2_COUNTERS = (
    ("l2_reads", m.L2_READS),
    ("l2_hits", m.L2_READ_HITS),
    ("l2_flushed", m.L2_WRITES),
    ("l2_errors", m.L2_ERRORS),
    ("l2_corrupt", m.L2_CORRUPT),
    ("l2_degraded", m.L2_DEGRADED),
    ("l2_dropped", m.L2_DROPPED),
    ("l2_skipped", m.L2_SKIPPED),
)


def _add(out: Samples, spec: MetricSpec, labels: tuple[str, ...], value: Any) -> None:
    key = (spec.name, labels)
    out[key] = out.get(key, 0.0) + float(value)


def _tenant_levels(
    out: Samples, spec: MetricSpec, base: tuple[str, ...], per: Mapping[str, int], lab: Labeler
) -> None:
    for tenant, value in per.items():
        _add(out, spec, (*base, lab.tenant(tenant)), value)


def shard_samples(stats: Mapping[str, Any], namespace: str, lab: Labeler) -> Samples:
    """Return the samples of one shard's admin `ShardActor.stats` reply."""
    out: Samples = {}
    base = (namespace, str(stats["shard"]))
    for tenant, layers in stats.get("layers", {}).items():
        t = lab.tenant(tenant)
        for layer, c in layers.items():
            labels = (*base, t, lab.layer(layer))
            _add(out, m.HITS, labels, c["hits"])
            _add(out, m.MISSES, labels, c["misses"])
            _add(out, m.SETS, labels, c["sets"])
            _add(out, m.REQUESTS, labels, c["hits"] + c["misses"])
    _add(out, m.DELETES, base, stats.get("deletes", 0))
    for reason, n in stats.get("evictions", {}).items():
        _add(out, m.EVICTIONS, (*base, reason), n)
    _tenant_levels(out, m.ENTRIES, base, stats.get("tenant_entries", {}), lab)
    _tenant_levels(out, m.STORED_BYTES, base, stats.get("tenant_bytes", {}), lab)
    _add(out, m.CAPACITY_BYTES, base, stats.get("max_bytes", 0))
    _add(out, m.OWNED_SLOTS, base, stats.get("owned_slots", 0))
    _lease_samples(out, base, stats.get("leases", {}), stats.get("lease_tenants", {}), lab)
    if "l2_reads" in stats:
        for field, spec in _L2_COUNTERS:
            _add(out, spec, base, stats.get(field, 0))
        _add(out, m.L2_DIRTY, base, stats.get("l2_dirty", 0))
        _add(out, m.L2_UP, base, 1 if stats.get("l2_up", True) else 0)
    return out


def _lease_samples(
    out: Samples,
    base: tuple[str, ...],
    table: Mapping[str, Any],
    tenants: Mapping[str, Mapping[str, int]],
    lab: Labeler,
) -> None:
    if table:
        _add(out, m.LEASES_IN_FLIGHT, base, table.get("in_flight", 0))
        _add(out, m.LEASE_WAITERS, base, table.get("waiting", 0))
        _add(out, m.LEASES_EXPIRED, base, table.get("expired", 0))
    for tenant, usage in tenants.items():
        labels = (*base, lab.tenant(tenant))
        _add(out, m.COMPUTES, labels, usage.get("computes", 0))
        _add(out, m.LEASE_WAITS, labels, usage.get("lease_waits", 0))


def coordinator_samples(view: Mapping[str, Any], namespace: str, lab: Labeler) -> Samples:
    """Return the samples of `CoordinatorActor.metrics_view`: the leases of tenants
    with compute quotas, throttling, and what the cache saved per model."""
    out: Samples = {}
    base = (namespace, "coordinator")
    tenants = view.get("tenants", {})
    _lease_samples(out, base, view.get("leases", {}), tenants, lab)
    for tenant, usage in tenants.items():
        _add(out, m.THROTTLED, (namespace, lab.tenant(tenant)), usage.get("throttled", 0))
    for model, row in view.get("savings", {}).items():
        mod = lab.model(model)
        _add(out, m.TOKENS_SAVED, (namespace, mod, "prompt"), row["prompt_tokens"])
        _add(out, m.TOKENS_SAVED, (namespace, mod, "completion"), row["completion_tokens"])
        _add(out, m.CALLS_SAVED, (namespace, mod), row["calls"])
        _add(out, m.COST_SAVED, (namespace, mod), row["cost_usd"])
    return out


def semantic_samples(stats: Mapping[str, Any], namespace: str, lab: Labeler) -> Samples:
    """Return the level samples of `SemanticIndexActor.stats` (all tenants)."""
    out: Samples = {}
    _add(out, m.SEMANTIC_VECTORS, (namespace,), stats.get("vectors", 0))
    _add(out, m.SEMANTIC_INDEXES, (namespace,), stats.get("indexes", 0))
    return out
