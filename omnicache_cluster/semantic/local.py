"""`LocalSemanticIndex`: the semantic index in this process, for a cache without a cluster.

The same index as the cluster's `SemanticIndexActor`, without Ray: one
`FAISSBackend` per scope (tenant, key namespace, model, context hash), the query
texts the lexical guard reads, the verified observations per entry and the shared
prior histogram the adaptive cache learns from. It answers the calls of
`SemanticIndex` with the same replies, so `SemanticCache` and `AdaptiveSemanticCache`
decide exactly as they do on a cluster (same threshold, guard, tie and refusal
margins, same adaptive policy).

What differs from the cluster's index: the vectors live in this process only (another
process, or a restart, starts empty; the answers themselves stay in the backend and
are still found by an exact lookup), expired vectors are dropped on the next search
rather than by a sweeper, and there is no durable Qdrant copy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from omnicache_cluster.backends.vector.base import IndexScope, check_vectors
from omnicache_cluster.core.keys import validate_part

if TYPE_CHECKING:
    from omnicache_cluster.backends.vector.faiss import FAISSBackend
    from omnicache_cluster.protocols import CacheBackend

__all__ = ["LocalSemanticIndex"]

#: The prior histogram's bins (the index actor's ``PRIOR_BINS``).
PRIOR_BINS = 200

Hit = tuple[str, float, "str | None", list[tuple[float, bool]]]


class _Prior:
    """Verified (similarity, correct) counts of one (tenant, namespace, model)."""

    __slots__ = ("correct", "squares", "wrong")

    def __init__(self) -> None:
        self.correct = np.zeros(PRIOR_BINS, dtype=np.float64)
        self.wrong = np.zeros(PRIOR_BINS, dtype=np.float64)
        self.squares = np.zeros(PRIOR_BINS, dtype=np.float64)

    def add(self, score: float, correct: bool, weight: float) -> None:
        b = min(PRIOR_BINS - 1, max(0, int(score * PRIOR_BINS)))
        (self.correct if correct else self.wrong)[b] += weight
        self.squares[b] += weight * weight


class LocalSemanticIndex:
    """Vectors that point at one backend's cache entries, for one embedding model.

    Args:
        backend: the local backend view (its tenant and key namespace scope every call).
        model: the embedding model id.
        dim: the vector dimension.
        vector_backend: a `FAISSBackend` to hold the vectors of the default context
            (the seed's ``vector_backend=``); other contexts get indexes like it.
        max_entries_per_index: the oldest vectors of an index are dropped past this.
        max_observations_per_entry: verification results kept per entry.
        clock: wall-clock seconds (injectable for tests).
    """

    def __init__(
        self,
        backend: CacheBackend,
        model: str,
        dim: int,
        *,
        vector_backend: FAISSBackend | None = None,
        max_entries_per_index: int | None = 2_000_000,
        max_observations_per_entry: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if vector_backend is not None and vector_backend.dim != dim:
            raise ValueError(
                f"vector_backend holds {vector_backend.dim}-d vectors, the embeddings are {dim}-d"
            )
        self._backend = backend
        self._model = validate_part("model", model)
        self._dim = dim
        self._default = vector_backend
        self._max_entries = max_entries_per_index
        self._max_obs = max_observations_per_entry
        self._clock = clock
        self._lock = threading.RLock()
        self._indexes: dict[IndexScope, FAISSBackend] = {}
        self._obs: dict[IndexScope, dict[str, deque[tuple[float, bool]]]] = {}
        self._priors: dict[tuple[str, str, str], _Prior] = {}

    @property
    def dim(self) -> int:
        """The vector dimension."""
        return self._dim

    @property
    def model(self) -> str:
        """The embedding model id."""
        return self._model

    def scope(self, context: str = "") -> tuple[str, str, str, str]:
        """Return the index scope ``(tenant, key namespace, model, context)``."""
        return (self._backend.tenant, self._backend.key_namespace, self._model, context)

    def check(self, vectors: Any) -> np.ndarray:
        """Validate and L2-normalise ``vectors`` (one or a matrix).

        Raises:
            ValueError: wrong dimension, NaN/inf, or a zero vector.
        """
        return check_vectors(vectors, self._dim)

    # -- indexes ----------------------------------------------------------------------

    def _index_for(self, scope: IndexScope) -> FAISSBackend:
        index = self._indexes.get(scope)
        if index is None:
            if self._default is not None and scope.context == "":
                index = self._default
            else:
                from omnicache_cluster.backends.vector.faiss import FAISSBackend

                index = FAISSBackend(self._dim, max_entries=self._max_entries, clock=self._clock)
            self._indexes[scope] = index
        return index

    def _drop_scope(self, scope: IndexScope) -> None:
        index = self._indexes.pop(scope, None)
        if index is not None and index is self._default:
            index.clear()
        self._obs.pop(scope, None)

    def _expire(self, scope: IndexScope, index: FAISSBackend) -> None:
        keys = index.expire(self._clock())
        obs = self._obs.get(scope)
        if obs:
            for key in keys:
                obs.pop(key, None)

    # -- the calls of SemanticIndex ---------------------------------------------------

    def add(
        self,
        keys: Sequence[str],
        vectors: Any,
        *,
        context: str = "",
        ttl: float | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> int:
        """Index ``vectors`` as pointers to the stored ``keys``; return how many.

        Raises:
            ValueError: a bad vector, a key of another tenant, or lengths that differ.
        """
        from omnicache_cluster.core.scope import check_ttl

        mat = self.check(vectors)
        if len(keys) != mat.shape[0]:
            raise ValueError(f"{len(keys)} keys but {mat.shape[0]} vectors")
        if texts is not None and len(texts) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(texts)} texts")
        prefix = f"{self._backend.key_namespace}:{self._backend.tenant}:"
        for key in keys:
            if not isinstance(key, str) or not key.startswith(prefix):
                raise ValueError(f"{key!r} is not a stored key of this backend's tenant")
        ttl = check_ttl(ttl)
        sc = IndexScope(*self.scope(context))
        with self._lock:
            expires = None if ttl is None else self._clock() + float(ttl)
            index = self._index_for(sc)
            index.add_many(list(keys), mat, expires_at=[expires] * len(keys), texts=texts)
            evicted = index.take_evicted()
            obs = self._obs.get(sc)
            if obs:
                for key in [*keys, *evicted]:  # a re-stored entry starts from the prior
                    obs.pop(key, None)
        return len(keys)

    async def aadd(
        self,
        keys: Sequence[str],
        vectors: Any,
        *,
        context: str = "",
        ttl: float | None = None,
        texts: Sequence[str | None] | None = None,
    ) -> int:
        """Async `add` (an in-process index: it runs in the caller)."""
        return self.add(keys, vectors, context=context, ttl=ttl, texts=texts)

    def search(
        self, vectors: Any, top_k: int = 4, *, context: str = "", with_stats: bool = False
    ) -> tuple[list[list[Hit]], Any]:
        """Return ``(hits per query, prior)`` as `SemanticIndex.search` does.

        Raises:
            ValueError: a bad vector or ``top_k``.
        """
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        mat = self.check(vectors)
        sc = IndexScope(*self.scope(context))
        with self._lock:
            index = self._indexes.get(sc)
            if index is None or not len(index):
                hits: list[list[Hit]] = [[] for _ in range(mat.shape[0])]
            else:
                self._expire(sc, index)
                obs = self._obs.get(sc, {}) if with_stats else {}
                hits = [
                    [(k, s, index.text_of_row(row), list(obs.get(k, ()))) for k, s, row in found]
                    for found in index.search_rows(mat, top_k)
                ]
            prior = None
            if with_stats:
                p = self._priors.get((sc.tenant, sc.namespace, sc.model))
                prior = (
                    ([], [], [])
                    if p is None
                    else (p.correct.tolist(), p.wrong.tolist(), p.squares.tolist())
                )
        return hits, prior

    async def asearch(
        self, vectors: Any, top_k: int = 4, *, context: str = "", with_stats: bool = False
    ) -> tuple[list[list[Hit]], Any]:
        """Async `search`."""
        return self.search(vectors, top_k, context=context, with_stats=with_stats)

    def delete(self, keys: Sequence[str], *, context: str = "") -> int:
        """Remove the vectors of ``keys``; return how many were indexed."""
        sc = IndexScope(*self.scope(context))
        with self._lock:
            index = self._indexes.get(sc)
            if index is None:
                return 0
            n = index.delete_many(list(keys))
            obs = self._obs.get(sc)
            if obs:
                for key in keys:
                    obs.pop(key, None)
            return n

    async def adelete(self, keys: Sequence[str], *, context: str = "") -> int:
        """Async `delete`."""
        return self.delete(keys, context=context)

    def feedback(
        self, items: Sequence[tuple[str, float, bool, float]], *, context: str = ""
    ) -> int:
        """Record verification results ``(key, similarity, correct, weight)``."""
        sc = IndexScope(*self.scope(context))
        with self._lock:
            prior = self._priors.setdefault((sc.tenant, sc.namespace, sc.model), _Prior())
            index = self._indexes.get(sc)
            obs = self._obs.setdefault(sc, {})
            for key, score, correct, weight in items:
                s, c = float(score), bool(correct)
                prior.add(s, c, float(weight))
                if index is not None and key in index:
                    obs.setdefault(key, deque(maxlen=self._max_obs)).append((s, c))
        return len(items)

    async def afeedback(
        self, items: Sequence[tuple[str, float, bool, float]], *, context: str = ""
    ) -> int:
        """Async `feedback`."""
        return self.feedback(items, context=context)

    def clear(self) -> int:
        """Remove every vector and statistic of this backend's tenant and namespace."""
        tenant, namespace = self._backend.tenant, self._backend.key_namespace
        n = 0
        with self._lock:
            for sc in [s for s in self._indexes if s.tenant == tenant and s.namespace == namespace]:
                n += len(self._indexes[sc])
                self._drop_scope(sc)
            for key in [k for k in self._priors if k[0] == tenant and k[1] == namespace]:
                del self._priors[key]
        return n

    def stats(self) -> dict[str, Any]:
        """Return the index counts of this backend's tenant and key namespace."""
        tenant, namespace = self._backend.tenant, self._backend.key_namespace
        with self._lock:
            scopes = [s for s in self._indexes if s.tenant == tenant and s.namespace == namespace]
            kinds: dict[str, int] = {}
            for s in scopes:
                kinds[self._indexes[s].kind] = kinds.get(self._indexes[s].kind, 0) + 1
            return {
                "indexes": len(scopes),
                "vectors": sum(len(self._indexes[s]) for s in scopes),
                "kinds": kinds,
                "durable": False,
            }

    def sweep(self) -> int:
        """Drop expired vectors now; return how many."""
        removed = 0
        with self._lock:
            for sc, index in list(self._indexes.items()):
                keys = index.expire(self._clock())
                removed += len(keys)
                obs = self._obs.get(sc)
                if obs:
                    for key in keys:
                        obs.pop(key, None)
        return removed
