"""`SemanticIndexActor`: FAISS indexes that point at cache entries, one per scope.

One index per `IndexScope` (tenant, key namespace, embedding model id, context hash),
so a search can only ever return entries of the caller's own tenant and conversation
context. Each index is a `FAISSBackend`: exact while small, HNSW past a size. A vector
expires with the cache entry it points to (same TTL), and a sweep drops it.

The actor also keeps what the adaptive cache learns: per entry, the verified
``(similarity, correct)`` observations of queries it was the candidate for; per
(tenant, namespace, model), a histogram of all of them, the shared prior of new
entries. The decisions are made in the client (`omnicache_cluster.semantic`).

With a `QdrantConfig` the actor writes every add and delete through to Qdrant before
it acknowledges, and after a restart (the constructor runs again) it rebuilds its
FAISS indexes from Qdrant before it serves. Embedding never happens here: the caller
sends vectors.

The class is a plain async class; `omnicache_cluster.actors.remote` applies
``ray.remote``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnicache_cluster.actors._wire_server import WireServer
from omnicache_cluster.backends.vector.base import IndexScope, VectorRecord, check_vectors
from omnicache_cluster.backends.vector.faiss import FAISSBackend
from omnicache_cluster.backends.vector.qdrant import QdrantConfig
from omnicache_cluster.observability._samples import semantic_samples
from omnicache_cluster.observability.metrics import ActorMetricsConfig, MetricsRecorder
from omnicache_cluster.observability.ray_metrics import start_exporter

__all__ = ["PRIOR_BINS", "SemanticIndexActor", "SemanticIndexConfig"]

_log = logging.getLogger(__name__)

#: The shared prior is a histogram of verified similarities in this many bins on [0, 1].
PRIOR_BINS = 200

# A search hit as sent to the client: (key, score, text, observations of the entry).
Hit = tuple[str, float, str | None, list[tuple[float, bool]]]


@dataclass(frozen=True)
class SemanticIndexConfig:
    """What the semantic index actor needs to start (sent again on a restart).

    Attributes:
        namespace: the Ray namespace of the cluster.
        hnsw_threshold: an index switches from exact search to HNSW past this size.
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build breadth.
        ef_search: HNSW search breadth.
        max_entries_per_index: the oldest vectors of an index are dropped past this.
        max_observations_per_entry: verification results kept per entry.
        sweep_interval_s: how often expired vectors are dropped.
        qdrant: write vectors through to Qdrant and rebuild from it after a restart.
        metrics: export searches and scores to Ray's metrics (``None``: off).
    """

    namespace: str
    hnsw_threshold: int = 20_000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    max_entries_per_index: int | None = 2_000_000
    max_observations_per_entry: int = 64
    sweep_interval_s: float = 1.0
    qdrant: QdrantConfig | None = None
    metrics: ActorMetricsConfig | None = field(default_factory=ActorMetricsConfig)


class _Prior:
    """Verified (similarity, correct) counts of one (tenant, namespace, model)."""

    __slots__ = ("correct", "squares", "wrong")

    def __init__(self) -> None:
        self.correct = np.zeros(PRIOR_BINS, dtype=np.float64)
        self.wrong = np.zeros(PRIOR_BINS, dtype=np.float64)
        # Sum of squared weights: the effective sample size of weighted labels.
        self.squares = np.zeros(PRIOR_BINS, dtype=np.float64)

    def add(self, score: float, correct: bool, weight: float) -> None:
        b = min(PRIOR_BINS - 1, max(0, int(score * PRIOR_BINS)))
        (self.correct if correct else self.wrong)[b] += weight
        self.squares[b] += weight * weight


class SemanticIndexActor(WireServer):
    """Vector indexes per scope, expiry, learned statistics, optional Qdrant copy;
    searches are also served on a direct port (`WireServer`, method ``wire_search``)."""

    _wire_methods = frozenset({"wire_search"})

    def __init__(
        self, config: SemanticIndexConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._config = config
        self._clock = clock
        self._indexes: dict[IndexScope, FAISSBackend] = {}
        self._obs: dict[IndexScope, dict[str, deque[tuple[float, bool]]]] = {}
        self._priors: dict[tuple[str, str, str], _Prior] = {}
        self._store: Any = None
        self._ready_lock: asyncio.Lock | None = None
        self._loaded = config.qdrant is None
        self._sweeper: asyncio.Task[None] | None = None
        self._last_durable_sweep = 0.0
        self._started = time.time()
        # Indexes being rebuilt (HNSW switch, compaction) in a thread, by id.
        self._rebuilding: set[int] = set()
        self._rebuild_tasks: set[asyncio.Task[None]] = set()
        self._metrics = MetricsRecorder.for_config(
            config.metrics, config.namespace, "semantic-index"
        )

    # -- start-up and the durable copy ------------------------------------------------

    async def _ready(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
            self._metrics_task = start_exporter(self._metrics, self.stats, semantic_samples)
        if self._loaded:
            return
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if self._loaded:
                return
            await asyncio.to_thread(self._rebuild_from_store)
            self._loaded = True
            for index in list(self._indexes.values()):
                self._kick_rebuild(index)

    def _kick_rebuild(self, index: FAISSBackend) -> None:
        """Start the rebuild ``index`` asks for, in a thread: searches and writes go on
        against the current index meanwhile (an HNSW build of a large index takes
        seconds; in the event loop it would stall every caller)."""
        if not index.rebuild_due or id(index) in self._rebuilding:
            return
        self._rebuilding.add(id(index))
        task = asyncio.get_running_loop().create_task(self._rebuild(index))
        self._rebuild_tasks.add(task)
        task.add_done_callback(self._rebuild_tasks.discard)

    async def _rebuild(self, index: FAISSBackend) -> None:
        try:
            await asyncio.to_thread(index.rebuild)
        except Exception:
            _log.exception("semantic index rebuild failed (the current index keeps serving)")
        finally:
            self._rebuilding.discard(id(index))
        if index.rebuild_due and index in self._indexes.values():
            self._kick_rebuild(index)  # more became due while it ran

    def _durable(self) -> Any:
        if self._store is None and self._config.qdrant is not None:
            from omnicache_cluster.backends.vector.qdrant import QdrantBackend

            self._store = QdrantBackend.from_config(self._config.qdrant)
        return self._store

    def _rebuild_from_store(self) -> None:
        store = self._durable()
        groups: dict[IndexScope, list[VectorRecord]] = {}
        count = 0
        for record in store.scan():
            groups.setdefault(record.scope, []).append(record)
            count += 1
        for scope, records in groups.items():
            index = self._index_for(scope, len(records[0].vector))
            index.add_many(
                [r.key for r in records],
                np.stack([np.asarray(r.vector, dtype=np.float32) for r in records]),
                expires_at=[r.expires_at for r in records],
                texts=[r.text for r in records],
            )
            evicted = index.take_evicted()  # a copy written before a smaller limit
            if evicted:
                store.delete_keys(evicted)
        _log.info("semantic index rebuilt %d vectors in %d scopes from Qdrant", count, len(groups))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.sweep_interval_s)
            try:
                self._expire()
                now = self._clock()
                if self._store is not None and now - self._last_durable_sweep > 60:
                    self._last_durable_sweep = now
                    await asyncio.to_thread(self._store.delete_expired, now)
            except Exception:  # never let the sweeper die silently
                _log.exception("semantic index expiry sweep failed")

    def _expire(self) -> int:
        now = self._clock()
        removed = 0
        for scope in list(self._indexes):
            index = self._indexes[scope]
            keys = index.expire(now)
            removed += len(keys)
            self._kick_rebuild(index)
            obs = self._obs.get(scope)
            if obs:
                for key in keys:
                    obs.pop(key, None)
            if not len(index):
                self._drop_scope(scope)
        return removed

    def _drop_scope(self, scope: IndexScope) -> None:
        self._indexes.pop(scope, None)
        self._obs.pop(scope, None)

    def _index_for(self, scope: IndexScope, dim: int) -> FAISSBackend:
        index = self._indexes.get(scope)
        if index is None:
            cfg = self._config
            index = FAISSBackend(
                dim,
                hnsw_threshold=cfg.hnsw_threshold,
                hnsw_m=cfg.hnsw_m,
                ef_construction=cfg.ef_construction,
                ef_search=cfg.ef_search,
                max_entries=cfg.max_entries_per_index,
                clock=self._clock,
                background_rebuild=True,
            )
            self._indexes[scope] = index
        elif index.dim != dim:
            raise ValueError(
                f"model {scope.model!r} has {index.dim}-d vectors in this scope, got {dim}-d; "
                "use another model id for another embedding"
            )
        return index

    # -- the API ----------------------------------------------------------------------

    async def add(
        self,
        scope: Sequence[str],
        keys: Sequence[str],
        vectors: Any,
        ttl: float | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> int:
        """Index ``vectors`` under ``keys`` in ``scope``; return how many.

        Acknowledged only once the durable copy (if any) has them.

        Raises:
            ValueError: bad vectors, lengths that differ, or a dimension that does
                not match the scope's.
        """
        await self._ready()
        sc = IndexScope(*scope)
        mat = check_vectors(vectors)
        if len(keys) != mat.shape[0]:
            raise ValueError(f"{len(keys)} keys but {mat.shape[0]} vectors")
        expires = None if ttl is None else self._clock() + float(ttl)
        self._index_for(sc, mat.shape[1])  # a wrong dimension fails before the write
        if self._config.qdrant is not None:
            records = [
                VectorRecord(k, mat[i], sc, expires, texts[i] if texts else None)
                for i, k in enumerate(keys)
            ]
            await asyncio.to_thread(self._durable().upsert, records)
        # Fetched again after the await: meanwhile the sweeper may have dropped the
        # (still empty) index of a new scope, and adding to that one would lose these.
        index = self._index_for(sc, mat.shape[1])
        index.add_many(list(keys), mat, expires_at=[expires] * len(keys), texts=texts)
        self._kick_rebuild(index)
        evicted = index.take_evicted()  # past max_entries_per_index: the oldest went
        obs = self._obs.get(sc)
        if obs:
            for key in [*keys, *evicted]:  # a re-stored entry starts again from the prior
                obs.pop(key, None)
        if evicted and self._config.qdrant is not None:  # nor are they rebuilt later
            await asyncio.to_thread(self._durable().delete_keys, evicted)
        return len(keys)

    async def search(
        self,
        scope: Sequence[str],
        vectors: Any,
        top_k: int = 4,
        with_stats: bool = False,
    ) -> tuple[list[list[Hit]], tuple[list[float], list[float], list[float]] | None]:
        """Return the best ``top_k`` hits per query vector, and the scope's prior.

        A hit is ``(key, similarity, text, observations)``; observations are the
        entry's verified ``(similarity, correct)`` pairs (empty unless
        ``with_stats``). The prior is ``(correct counts, wrong counts)`` per
        similarity bin, plus the sum of squared weights per bin (``None`` unless
        ``with_stats``).
        """
        await self._ready()
        sc = IndexScope(*scope)
        mat = check_vectors(vectors)
        index = self._indexes.get(sc)
        if index is None:
            hits: list[list[Hit]] = [[] for _ in range(mat.shape[0])]
        else:
            if index.dim != mat.shape[1]:
                raise ValueError(f"this scope has {index.dim}-d vectors, got {mat.shape[1]}-d")
            obs = self._obs.get(sc, {}) if with_stats else {}
            hits = [
                [(k, s, index.text_of_row(row), list(obs.get(k, ()))) for k, s, row in found]
                for found in index.search_rows(mat, top_k)
            ]
        best = [max(h[1] for h in found) if found else None for found in hits]
        self._metrics.semantic_search(sc.tenant, best)
        prior = None
        if with_stats:
            p = self._priors.get((sc.tenant, sc.namespace, sc.model))
            prior = (
                ([], [], [])
                if p is None
                else (p.correct.tolist(), p.wrong.tolist(), p.squares.tolist())
            )
        return hits, prior

    async def wire_search(self, arg: Sequence[Any]) -> Any:
        """`search` on the direct port: ``[scope, float32 bytes, rows, dim, top_k,
        with_stats]`` (msgpack carries no numpy arrays).

        Raises:
            ValueError: the bytes do not hold ``rows`` x ``dim`` float32 values, or bad
                vectors.
        """
        scope, data, rows, dim, top_k, with_stats = arg
        if not isinstance(data, bytes) or len(data) != 4 * int(rows) * int(dim):
            raise ValueError(f"expected {rows}x{dim} float32 values")
        vectors = np.frombuffer(data, dtype=np.float32).reshape(int(rows), int(dim))
        return await self.search(scope, vectors, int(top_k), bool(with_stats))

    async def delete(self, scope: Sequence[str], keys: Sequence[str]) -> int:
        """Remove the vectors of ``keys`` from ``scope``; return how many were there."""
        await self._ready()
        sc = IndexScope(*scope)
        if self._config.qdrant is not None:
            await asyncio.to_thread(self._durable().delete_keys, list(keys))
        index = self._indexes.get(sc)
        if index is None:
            return 0
        n = index.delete_many(keys)
        self._kick_rebuild(index)
        obs = self._obs.get(sc)
        if obs:
            for key in keys:
                obs.pop(key, None)
        if not len(index):
            self._drop_scope(sc)
        return n

    async def feedback(
        self, scope: Sequence[str], items: Sequence[tuple[str, float, bool, float]]
    ) -> int:
        """Record verification results; return how many.

        An item is ``(key, similarity, correct, weight)``; the weight is the inverse
        of the probability that the candidate was verified (so that a prior fed
        mostly by unserved candidates still estimates the error of served ones).
        Each goes to its entry's observations (when the entry is still indexed) and,
        weighted, to the prior of the scope's (tenant, namespace, model).
        """
        await self._ready()
        sc = IndexScope(*scope)
        prior = self._priors.setdefault((sc.tenant, sc.namespace, sc.model), _Prior())
        index = self._indexes.get(sc)
        obs = self._obs.setdefault(sc, {})
        cap = self._config.max_observations_per_entry
        for key, score, correct, weight in items:
            s, c = float(score), bool(correct)
            prior.add(s, c, float(weight))
            if index is not None and key in index:
                obs.setdefault(key, deque(maxlen=cap)).append((s, c))
        return len(items)

    async def clear(self, tenant: str, namespace: str) -> int:
        """Remove every vector and statistic of ``tenant`` in ``namespace``."""
        await self._ready()
        n = 0
        for sc in [s for s in self._indexes if s.tenant == tenant and s.namespace == namespace]:
            n += len(self._indexes[sc])
            self._drop_scope(sc)
        for key in [k for k in self._priors if k[0] == tenant and k[1] == namespace]:
            del self._priors[key]
        if self._config.qdrant is not None:
            await asyncio.to_thread(self._durable().delete_tenant, tenant, namespace)
        return n

    async def stats(
        self, tenant: str | None = None, namespace: str | None = None
    ) -> dict[str, Any]:
        """Return index counts (all, or only ``tenant``'s, in ``namespace`` if given)."""
        await self._ready()
        scopes = [
            s
            for s in self._indexes
            if (tenant is None or s.tenant == tenant)
            and (namespace is None or s.namespace == namespace)
        ]
        kinds: dict[str, int] = {}
        for s in scopes:
            kinds[self._indexes[s].kind] = kinds.get(self._indexes[s].kind, 0) + 1
        out: dict[str, Any] = {
            "indexes": len(scopes),
            "vectors": sum(len(self._indexes[s]) for s in scopes),
            "kinds": kinds,
            "rebuilding": len(self._rebuilding),
            "direct_requests": self.wire_requests,
            "durable": self._config.qdrant is not None,
        }
        if tenant is None:
            out["uptime_s"] = time.time() - self._started
        return out

    async def sweep(self) -> int:
        """Drop expired vectors now; return how many."""
        await self._ready()
        return self._expire()

    async def ping(self) -> str:
        """A liveness probe (also waits for a rebuild from Qdrant)."""
        await self._ready()
        return "ok"

    async def config(self) -> SemanticIndexConfig:
        """Return the configuration this actor was created with."""
        return self._config
