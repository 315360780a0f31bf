"""The cache's metrics, declared once, and the recorder that aggregates them in an actor.

Every metric the project exports is a `MetricSpec` below; the in-actor Ray exporter,
the `PrometheusExporter`, the `OpenTelemetryExporter`, the Grafana dashboard and its
test all read these names, so a name cannot drift between them. Ray's endpoint shows
each name with Ray's ``ray_`` prefix (``ray_omnicache_hits_total``).

Labels are bounded: ``namespace`` (the cluster's Ray namespace), ``shard`` (the
reporting actor: a shard's name, ``coordinator`` or ``semantic-index``), ``tenant``,
``layer`` and ``model`` (each capped by a `LabelLimiter`: the first N distinct values
keep their name, later ones report as ``other``), and small fixed sets (``reason``,
``kind``, ``op``, ``outcome``). Keys, tags and other free-form strings are never labels.

`MetricsRecorder` is what an actor's hot path touches, and only for what its stats do
not count already (latencies, semantic scores): a dict update or a bucket increment,
no Ray call. A periodic task (`omnicache_cluster.observability.ray_metrics`) exports
the aggregates. This module imports neither Ray nor any metrics library.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from omnicache_cluster.backends.base import AsyncByteStore, Record

__all__ = [
    "ALL_METRICS",
    "METRICS_BY_NAME",
    "OTHER",
    "ActorMetricsConfig",
    "LabelLimiter",
    "Labeler",
    "MetricSpec",
    "MetricsRecorder",
    "Samples",
    "TimedByteStore",
    "ray_exported_names",
]

Kind = Literal["counter", "gauge", "histogram"]
#: Cumulative counter values and gauge levels: ``(metric name, label values) -> value``.
Samples = dict[tuple[str, tuple[str, ...]], float]

#: The label value every tenant, layer or model past its limiter's cap reports as.
OTHER = "other"


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric.

    Attributes:
        name: the Prometheus name (``omnicache_..._total`` for counters).
        kind: ``counter``, ``gauge`` or ``histogram``.
        help: what it counts or measures.
        labels: label names, in the order samples carry their values.
        unit: the OpenTelemetry unit (``1``, ``By``, ``s``, ``USD``).
        buckets: histogram bucket upper bounds.
        client_only: served by the client-side exporters only, never by Ray's endpoint.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    unit: str = "1"
    buckets: tuple[float, ...] = ()
    client_only: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("counter", "gauge", "histogram"):
            raise ValueError(f"kind must be counter, gauge or histogram, got {self.kind!r}")
        if not _NAME.fullmatch(self.name) or (self.kind == "counter") != self.name.endswith(
            "_total"
        ):
            raise ValueError(f"{self.kind} name {self.name!r} breaks the naming conventions")
        if (self.kind == "histogram") != bool(self.buckets) or list(self.buckets) != sorted(
            set(self.buckets)
        ):
            raise ValueError(f"{self.name}: only histograms have (increasing) buckets")


_NAME = re.compile(r"omnicache_[a-z0-9_]+")
_SHARD = ("namespace", "shard")
_REQ = (*_SHARD, "tenant", "layer")


def _c(name: str, help: str, labels: tuple[str, ...] = _SHARD, unit: str = "1") -> MetricSpec:
    return MetricSpec(name, "counter", help, labels, unit)


def _g(name: str, help: str, labels: tuple[str, ...] = _SHARD, unit: str = "1") -> MetricSpec:
    return MetricSpec(name, "gauge", help, labels, unit)


# -- the request path (from the shards' own counters) ----------------------------------
REQUESTS = _c("omnicache_requests_total", "Lookups served (hits + misses).", _REQ)
HITS = _c("omnicache_hits_total", "Lookups that found a value (L1 or L2).", _REQ)
MISSES = _c("omnicache_misses_total", "Lookups that found nothing.", _REQ)
SETS = _c("omnicache_sets_total", "Values stored.", _REQ)
DELETES = _c("omnicache_deletes_total", "Entries deleted or invalidated by a caller.")
EVICTIONS = _c(
    "omnicache_evictions_total",
    "Entries evicted, by reason (lru, ttl, quota).",
    (*_SHARD, "reason"),
)
ENTRIES = _g("omnicache_entries", "Entries held in L1.", (*_SHARD, "tenant"))
STORED_BYTES = _g(
    "omnicache_stored_bytes", "Bytes charged to L1 entries.", (*_SHARD, "tenant"), "By"
)
CAPACITY_BYTES = _g("omnicache_capacity_bytes", "The shard's L1 byte budget.", unit="By")
OWNED_SLOTS = _g("omnicache_owned_slots", "Ring slots the shard owns.")
# -- L2 (from the shards' L2 counters, and timed around the store) ---------------------
L2_READS = _c("omnicache_l2_reads_total", "Keys looked up in L2 (L1 misses).")
L2_READ_HITS = _c("omnicache_l2_read_hits_total", "L2 lookups that found a record.")
L2_WRITES = _c("omnicache_l2_writes_total", "Writes and deletes flushed to L2.")
L2_ERRORS = _c("omnicache_l2_errors_total", "L2 operations that failed (served from L1).")
L2_CORRUPT = _c("omnicache_l2_corrupt_total", "Records read back from L2 that were corrupt.")
L2_DEGRADED = _c(
    "omnicache_l2_degraded_writes_total", "Writes acknowledged from L1 alone while L2 was down."
)
L2_DROPPED = _c("omnicache_l2_dropped_writes_total", "Dirty writes dropped (queue full, L2 down).")
L2_SKIPPED = _c("omnicache_l2_skipped_reads_total", "L2 lookups skipped while L2 was down.")
L2_DIRTY = _g("omnicache_l2_dirty_entries", "Writes not yet in L2.")
L2_UP = _g("omnicache_l2_up", "1 while L2 answers, 0 while it is left alone after an error.")
L2_SECONDS = MetricSpec(
    "omnicache_l2_operation_seconds",
    "histogram",
    "L2 call latency, by operation (read, write, delete, exists, scan).",
    (*_SHARD, "op"),
    "s",
    (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
# -- single-flight (shards; the coordinator for tenants with compute quotas) ------------
COMPUTES = _c(
    "omnicache_computes_total", "Misses this actor let one caller compute.", (*_SHARD, "tenant")
)
LEASE_WAITS = _c(
    "omnicache_lease_waits_total",
    "Callers that waited for another caller's compute.",
    (*_SHARD, "tenant"),
)
LEASES_EXPIRED = _c("omnicache_leases_expired_total", "Leases whose leader stopped renewing.")
LEASES_IN_FLIGHT = _g("omnicache_leases_in_flight", "Computes in progress.")
LEASE_WAITERS = _g("omnicache_lease_waiters", "Callers waiting for a compute now.")
LEASE_WAIT_SECONDS = MetricSpec(
    "omnicache_lease_wait_seconds",
    "histogram",
    "Time a caller waited for another caller's compute, by outcome.",
    (*_SHARD, "tenant", "outcome"),
    "s",
    (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
THROTTLED = _c(
    "omnicache_throttled_total",
    "Computes held back by a tenant's compute quota.",
    ("namespace", "tenant"),
)
# -- what the cache saved (the coordinator, fed by `record_saving`) ---------------------
TOKENS_SAVED = _c(
    "omnicache_tokens_saved_total",
    "LLM tokens not spent thanks to cache hits, by kind (prompt, completion).",
    ("namespace", "model", "kind"),
)
CALLS_SAVED = _c(
    "omnicache_calls_saved_total", "LLM calls answered from the cache.", ("namespace", "model")
)
COST_SAVED = _c(
    "omnicache_cost_saved_usd_total",
    "US dollars not spent (tokens saved x the recording process's price table).",
    ("namespace", "model"),
    "USD",
)
# -- the semantic index ------------------------------------------------------------------
SEMANTIC_SEARCHES = _c(
    "omnicache_semantic_searches_total",
    "Query vectors searched in the semantic index.",
    ("namespace", "tenant"),
)
SEMANTIC_EMPTY = _c(
    "omnicache_semantic_no_candidate_total",
    "Semantic searches that found no candidate at all.",
    ("namespace", "tenant"),
)
SEMANTIC_SCORE = MetricSpec(
    "omnicache_semantic_top_score",
    "histogram",
    "Similarity of the best candidate of each semantic search.",
    ("namespace", "tenant"),
    "1",
    (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0),
)
SEMANTIC_VECTORS = _g("omnicache_semantic_vectors", "Vectors indexed.", ("namespace",))
SEMANTIC_INDEXES = _g("omnicache_semantic_indexes", "Index scopes held.", ("namespace",))
# -- the exporter's own cost ----------------------------------------------------------------
EXPORTS = _c("omnicache_metrics_exports_total", "Periodic metric exports done by the actor.")
EXPORTER_UP = MetricSpec(
    "omnicache_exporter_up",
    "gauge",
    "1 when the client-side exporter's last read of the cluster worked, else 0.",
    ("namespace",),
    client_only=True,
)
EXPORT_SECONDS = _c(
    "omnicache_metrics_export_seconds_total", "Time the actor spent exporting metrics.", unit="s"
)

ALL_METRICS: tuple[MetricSpec, ...] = tuple(
    v for k, v in sorted(globals().items()) if isinstance(v, MetricSpec) and k.isupper()
)
METRICS_BY_NAME: dict[str, MetricSpec] = {m.name: m for m in ALL_METRICS}


def ray_exported_names(prefix: str = "ray_") -> set[str]:
    """Return every series name Ray's metrics endpoint can show for these metrics
    (histograms as their ``_bucket``, ``_sum`` and ``_count`` series)."""
    out = set()
    for m in ALL_METRICS:
        if m.client_only:
            continue
        if m.kind == "histogram":
            out.update(f"{prefix}{m.name}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            out.add(prefix + m.name)
    return out


@dataclass(frozen=True)
class ActorMetricsConfig:
    """How an actor exports its metrics to Ray (``None`` in its config: it does not).

    Attributes:
        interval_s: seconds between two exports of the aggregated counters.
        max_tenants: distinct tenant label values (``other`` past them).
        max_layers: distinct layer label values (``other`` past them).
        max_models: distinct model label values (``other`` past them).
    """

    interval_s: float = 2.0
    max_tenants: int = 20
    max_layers: int = 16
    max_models: int = 32

    def __post_init__(self) -> None:
        interval = self.interval_s
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"interval_s must be a positive number, got {interval!r}")
        for name in ("max_tenants", "max_layers", "max_models"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


class LabelLimiter:
    """Maps open-ended values (tenants, layers, models) to at most ``limit`` labels.

    The first ``limit`` distinct values keep their own label for the limiter's life,
    every later one reports as `OTHER`. Sticky on purpose: a counter whose values
    moved between labels (as a "top N by traffic" would) would count twice in a sum.

    Args:
        limit: how many distinct values keep their own label.
        keep: values that always keep theirs (not counted in ``limit``).
    """

    __slots__ = ("_keep", "_limit", "_seen")

    def __init__(self, limit: int, keep: Iterable[str] = ()) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        self._limit = limit
        self._keep = frozenset(keep)
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        """Return the label to report ``value`` under."""
        if value in self._seen or value in self._keep:
            return value
        if len(self._seen) < self._limit and value != OTHER:
            self._seen.add(value)
            return value
        return OTHER

    def __len__(self) -> int:
        return len(self._seen) + len(self._keep)


class Labeler:
    """The tenant, layer and model limiters of one exporting process or actor."""

    __slots__ = ("layer", "model", "tenant")

    def __init__(self, config: ActorMetricsConfig | None = None) -> None:
        config = config or ActorMetricsConfig()
        self.tenant = LabelLimiter(config.max_tenants, keep=("default",))
        self.layer = LabelLimiter(config.max_layers, keep=("default",))
        self.model = LabelLimiter(config.max_models)


class _Buckets:
    """Count and sum of the values of one histogram series, per bucket."""

    __slots__ = ("bounds", "counts", "sums")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sums = [0.0] * (len(bounds) + 1)

    def add(self, value: float) -> None:
        i = bisect_left(self.bounds, value)  # the first bound >= value: Prometheus's le
        self.counts[i] += 1
        self.sums[i] += value


class MetricsRecorder:
    """In-actor aggregates of what the actor's stats do not count: counters and
    histogram buckets, exported (and the histograms drained) by a periodic task.

    Args:
        config: limits and export interval.
        namespace: the cluster's Ray namespace (the ``namespace`` label).
        actor: the ``shard`` label: the shard's name, ``coordinator``, ...
    """

    enabled = True

    def __init__(self, config: ActorMetricsConfig, namespace: str, actor: str) -> None:
        self.config = config
        self.namespace = namespace
        self.actor = actor
        self.labels = Labeler(config)
        self._counts: Samples = {}
        self._hists: dict[tuple[MetricSpec, tuple[str, ...]], _Buckets] = {}

    @staticmethod
    def for_config(
        config: ActorMetricsConfig | None, namespace: str, actor: str
    ) -> MetricsRecorder:
        """Return a recorder, or a no-op one when ``config`` is ``None`` (metrics off)."""
        if config is None:
            return _NullRecorder(ActorMetricsConfig(), namespace, actor)
        return MetricsRecorder(config, namespace, actor)

    def add(self, spec: MetricSpec, labels: tuple[str, ...], n: float = 1.0) -> None:
        """Add ``n`` to a counter series (full label values, in ``spec.labels`` order)."""
        key = (spec.name, labels)
        self._counts[key] = self._counts.get(key, 0.0) + n

    def observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        """Put one value in a histogram series."""
        buckets = self._hists.get((spec, labels))
        if buckets is None:
            buckets = self._hists[(spec, labels)] = _Buckets(spec.buckets)
        buckets.add(value)

    def counters(self) -> Samples:
        """Return the cumulative counters recorded here."""
        return dict(self._counts)

    def drain(self) -> list[tuple[MetricSpec, tuple[str, ...], list[tuple[float, int]]]]:
        """Return and forget the histogram values since the last drain, per series, as
        ``(mean, count)`` per non-empty bucket: the mean of a bucket's values lies in
        that bucket, so observing it ``count`` times keeps counts and sums exact."""
        out = []
        for (spec, labels), b in self._hists.items():
            pairs = [(s / c, c) for c, s in zip(b.counts, b.sums, strict=True) if c]
            if pairs:
                out.append((spec, labels, pairs))
        self._hists = {}
        return out

    # -- the hooks the actors call ------------------------------------------------------

    def lease_wait(self, tenant: str, outcome: str, seconds: float) -> None:
        """Record a caller that waited ``seconds`` for another's compute."""
        labels = (self.namespace, self.actor, self.labels.tenant(tenant), outcome)
        self.observe(LEASE_WAIT_SECONDS, labels, seconds)

    def l2_op(self, op: str, seconds: float) -> None:
        """Record one L2 call of ``op`` that took ``seconds``."""
        self.observe(L2_SECONDS, (self.namespace, self.actor, op), seconds)

    def semantic_search(self, tenant: str, top_scores: Sequence[float | None]) -> None:
        """Record searches: the best candidate's score per query (``None``: none)."""
        labels = (self.namespace, self.labels.tenant(tenant))
        self.add(SEMANTIC_SEARCHES, labels, len(top_scores))
        for score in top_scores:
            if score is None:
                self.add(SEMANTIC_EMPTY, labels)
            else:
                self.observe(SEMANTIC_SCORE, labels, float(score))

    def exported(self, seconds: float) -> None:
        """Count one export of the periodic task that took ``seconds``."""
        labels = (self.namespace, self.actor)
        self.add(EXPORTS, labels)
        self.add(EXPORT_SECONDS, labels, seconds)

    def timed(self, store: AsyncByteStore) -> AsyncByteStore:
        """Return ``store`` with its calls timed into `L2_SECONDS`."""
        return TimedByteStore(store, self)


class _NullRecorder(MetricsRecorder):
    """Metrics off: every hook does nothing."""

    enabled = False

    def add(self, spec: MetricSpec, labels: tuple[str, ...], n: float = 1.0) -> None:
        return

    def observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        return

    def lease_wait(self, tenant: str, outcome: str, seconds: float) -> None:
        return

    def semantic_search(self, tenant: str, top_scores: Sequence[float | None]) -> None:
        return

    def timed(self, store: AsyncByteStore) -> AsyncByteStore:
        return store


class TimedByteStore:
    """An `AsyncByteStore` that times every call of the store it wraps.

    Args:
        store: the L2 store.
        recorder: where the latencies go (`MetricsRecorder.l2_op`).
    """

    def __init__(self, store: AsyncByteStore, recorder: MetricsRecorder) -> None:
        self._store = store
        self._recorder = recorder

    async def _timed(self, op: str, call: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await call(*args)
        finally:
            self._recorder.l2_op(op, time.perf_counter() - t0)

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Timed ``get_many`` (op ``read``)."""
        return await self._timed("read", self._store.get_many, keys)  # type: ignore[no-any-return]

    async def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Timed ``set_many`` (op ``write``)."""
        await self._timed("write", self._store.set_many, items)

    async def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Timed ``delete_many`` (op ``delete``)."""
        return await self._timed("delete", self._store.delete_many, keys)  # type: ignore[no-any-return]

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Timed ``exists_many`` (op ``exists``)."""
        return await self._timed("exists", self._store.exists_many, keys)  # type: ignore[no-any-return]

    async def tagged(self, tag: str) -> list[str]:
        """Timed ``tagged`` (op ``scan``)."""
        return await self._timed("scan", self._store.tagged, tag)  # type: ignore[no-any-return]

    async def keys(self, prefix: str = "") -> list[str]:
        """Timed ``keys`` (op ``scan``)."""
        return await self._timed("scan", self._store.keys, prefix)  # type: ignore[no-any-return]

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """The wrapped store's stats."""
        return self._store.stats(tenant)

    async def close(self) -> None:
        """Close the wrapped store."""
        await self._store.close()
