"""`CacheMetrics`: the counters of one `CacheManager` in one process, with the seed's API.

The seed's calls work unchanged: ``record_hit()``, ``record_miss()``,
``record_eviction()``, ``record_set()``, the ``hits``/``misses``/``sets``/``evictions``
counters, ``hit_rate``/``miss_rate``, the provider prompt-cache fields
(``provider_cache_hits``, ``estimated_tokens_saved``, ``estimated_cost_saved_usd``),
``reset()`` and ``snapshot()``. `PrometheusExporter` and `OpenTelemetryExporter` export
it (or a manager) under the seed's metric names.

Differences from the seed, on purpose: ``evictions`` also counts the evictions of the
manager's backend (an `InMemoryBackend`'s LRU, a shard's), read when asked; and with
no lookup yet ``miss_rate`` is 0.0 (the seed said 1.0: a dashboard would show a 100%
miss rate for an idle cache).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omnicache_cluster.observability.cost import PriceTable
    from omnicache_cluster.observability.snapshot import ClusterMetrics

__all__ = ["SEED_OTEL", "SEED_PROMETHEUS", "CacheMetrics", "local_metrics", "seed_values"]


class CacheMetrics:
    """Hit, miss, set and eviction counters, plus provider prompt-cache savings;
    thread-safe.

    Args:
        evictions: returns the backend's eviction count (read at every `snapshot`
            and `evictions`); ``None``: only `record_eviction` counts; an int: the
            starting count (the seed's dataclass field, like ``hits``, ``misses``
            and ``sets``).

    Example:
        >>> m = CacheMetrics()
        >>> m.record_miss(); m.record_set(); m.record_hit()
        >>> m.snapshot()["hit_rate"], m.hits, m.evictions
        (0.5, 1, 0)
    """

    def __init__(
        self,
        evictions: Callable[[], int] | int | None = None,
        *,
        hits: int = 0,
        misses: int = 0,
        sets: int = 0,
    ) -> None:
        self._lock = threading.Lock()
        self.hits = hits
        self.misses = misses
        self.sets = sets
        #: Provider-side prompt-cache hits (`PromptCacheLayer`), the seed's field.
        self.provider_cache_hits = 0
        #: Input tokens the provider served from its prompt cache.
        self.estimated_tokens_saved = 0
        #: US dollars those cached tokens saved.
        self.estimated_cost_saved_usd = 0.0
        self._backend_evictions = None if isinstance(evictions, int) else evictions
        self._recorded_evictions = evictions if isinstance(evictions, int) else 0
        self._evictions_at_reset = 0

    # -- the seed's recorders -----------------------------------------------------------

    def record_hit(self) -> None:
        """Count one lookup that found a value."""
        with self._lock:
            self.hits += 1

    def record_miss(self) -> None:
        """Count one lookup that found nothing."""
        with self._lock:
            self.misses += 1

    def record_set(self) -> None:
        """Count one write."""
        with self._lock:
            self.sets += 1

    def record_eviction(self) -> None:
        """Count one eviction the backend does not count itself."""
        with self._lock:
            self._recorded_evictions += 1

    def record_provider_cache_hit(self, tokens: int, cost_usd: float = 0.0) -> None:
        """Count one provider prompt-cache hit of ``tokens`` input tokens worth
        ``cost_usd``."""
        with self._lock:
            self.provider_cache_hits += 1
            self.estimated_tokens_saved += int(tokens)
            self.estimated_cost_saved_usd += float(cost_usd)

    def record(self, *, hits: int = 0, misses: int = 0, sets: int = 0, evictions: int = 0) -> None:
        """Add to several counters at once."""
        with self._lock:
            self.hits += hits
            self.misses += misses
            self.sets += sets
            self._recorded_evictions += evictions

    # -- reads ------------------------------------------------------------------------

    def _backend_count(self) -> int:
        if self._backend_evictions is None:
            return 0
        return int(self._backend_evictions())

    @property
    def evictions(self) -> int:
        """Evictions since creation or `reset`: recorded ones plus the backend's."""
        backend = self._backend_count()
        with self._lock:
            return self._recorded_evictions + backend - self._evictions_at_reset

    @property
    def hit_rate(self) -> float:
        """Hits / lookups (0.0 before any lookup)."""
        with self._lock:
            lookups = self.hits + self.misses
            return self.hits / lookups if lookups else 0.0

    @property
    def miss_rate(self) -> float:
        """Misses / lookups (0.0 before any lookup; the seed said 1.0)."""
        with self._lock:
            lookups = self.hits + self.misses
            return self.misses / lookups if lookups else 0.0

    def reset(self) -> None:
        """Set every counter back to zero (the backend's evictions count from now)."""
        backend = self._backend_count()
        with self._lock:
            self.hits = self.misses = self.sets = 0
            self.provider_cache_hits = 0
            self.estimated_tokens_saved = 0
            self.estimated_cost_saved_usd = 0.0
            self._recorded_evictions = 0
            self._evictions_at_reset = backend

    def snapshot(self) -> dict[str, Any]:
        """Return the seed's snapshot: ``hits, misses, evictions, sets, hit_rate,
        miss_rate`` (rates rounded to 4 places), then ``provider_cache_hits,
        estimated_tokens_saved, estimated_cost_saved_usd``."""
        evictions = self.evictions
        with self._lock:
            hits, misses, sets = self.hits, self.misses, self.sets
            provider = (
                self.provider_cache_hits,
                self.estimated_tokens_saved,
                self.estimated_cost_saved_usd,
            )
        lookups = hits + misses
        return {
            "hits": hits,
            "misses": misses,
            "evictions": evictions,
            "sets": sets,
            "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
            "miss_rate": round(misses / lookups, 4) if lookups else 0.0,
            "provider_cache_hits": provider[0],
            "estimated_tokens_saved": provider[1],
            "estimated_cost_saved_usd": provider[2],
        }

    def __repr__(self) -> str:
        s = self.snapshot()
        return (
            f"CacheMetrics(hits={s['hits']}, misses={s['misses']}, "
            f"evictions={s['evictions']}, sets={s['sets']})"
        )

    @staticmethod
    def from_cluster(cluster: Any, prices: PriceTable | None = None) -> ClusterMetrics:
        """Return a snapshot of the whole cluster: every shard and tenant, plus the
        tokens and cost that `record_saving` recorded (`ClusterMetrics`).

        Args:
            cluster: the cluster's admin `CacheCluster`.
            prices: re-price the saved tokens with this `PriceTable`.
        """
        from omnicache_cluster.observability.snapshot import cluster_metrics

        return cluster_metrics(cluster, prices)


#: The seed's Prometheus series of one manager: ``(name after the prefix, kind, help,
#: attribute of CacheMetrics)``; served as ``{namespace}_{name}`` (``omnicache_...``).
SEED_PROMETHEUS: tuple[tuple[str, str, str, str], ...] = (
    ("cache_hits_total", "counter", "Total cache hits", "hits"),
    ("cache_misses_total", "counter", "Total cache misses", "misses"),
    ("cache_evictions_total", "counter", "Total cache evictions", "evictions"),
    ("cache_sets_total", "counter", "Total cache writes", "sets"),
    ("cache_hit_rate", "gauge", "Cache hit rate (0-1)", "hit_rate"),
    (
        "provider_cache_hits_total",
        "counter",
        "Provider-level prompt cache hits",
        "provider_cache_hits",
    ),
    (
        "tokens_saved_total",
        "counter",
        "Estimated tokens saved via provider caching",
        "estimated_tokens_saved",
    ),
    (
        "cost_saved_usd",
        "gauge",
        "Estimated USD saved via provider caching",
        "estimated_cost_saved_usd",
    ),
)

#: The seed's OpenTelemetry instruments, ``{namespace}.{name}``; counts are observable
#: counters here (the seed made every one a gauge), rates and money gauges as there.
SEED_OTEL: tuple[tuple[str, str, str, str, str], ...] = (
    ("hits", "counter", "Cache hits", "hits", "1"),
    ("misses", "counter", "Cache misses", "misses", "1"),
    ("sets", "counter", "Cache writes", "sets", "1"),
    ("evictions", "counter", "Cache evictions", "evictions", "1"),
    ("hit_rate", "gauge", "Cache hit rate (0-1)", "hit_rate", "1"),
    ("provider_cache_hits", "counter", "Provider prompt-cache hits", "provider_cache_hits", "1"),
    ("tokens_saved", "counter", "Tokens served by provider caching", "estimated_tokens_saved", "1"),
    (
        "cost_saved_usd",
        "gauge",
        "USD saved via provider caching",
        "estimated_cost_saved_usd",
        "USD",
    ),
)


def local_metrics(source: Any) -> CacheMetrics | None:
    """Return the `CacheMetrics` of ``source`` (itself, or a `CacheManager`'s), or
    ``None`` when ``source`` is something else (a cluster client)."""
    if isinstance(source, CacheMetrics):
        return source
    manager = sys.modules.get("omnicache_cluster.manager")
    if manager is not None and isinstance(source, manager.CacheManager):
        metrics: CacheMetrics = source.metrics
        return metrics
    return None


def seed_values(metrics: CacheMetrics) -> dict[str, float]:
    """Return every attribute the seed's series read, from one snapshot."""
    snap = metrics.snapshot()
    lookups = snap["hits"] + snap["misses"]
    values = {k: float(v) for k, v in snap.items()}
    values["hit_rate"] = snap["hits"] / lookups if lookups else 0.0  # not rounded
    return values
