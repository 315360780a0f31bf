"""`RetrievalCache`: retriever results keyed by query + retriever id + top_k + filters.

A RAG pipeline asks its vector store the same questions over and over; this layer
answers them from the cluster. Every input that changes the result set is part of the
key, metadata filters included (the seed keyed only query, retriever and top_k, so a
filtered and an unfiltered search shared one entry).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from omnicache_cluster.layers._base import LAYER_DEFAULT, CacheLayer, with_overrides
from omnicache_cluster.policies import RequestConfig, retriever_tag

__all__ = ["RetrievalCache"]

T = TypeVar("T")


def _retrieval_key(
    query: Any, retriever_id: str, top_k: int, filters: Mapping[str, Any] | None
) -> dict[str, Any]:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    return {"query": query, "retriever": retriever_id, "top_k": top_k, "filters": filters or {}}


def _retrieve_call(
    retrieve_fn: Callable[..., T], query: Any, top_k: int, filters: Mapping[str, Any] | None
) -> Callable[[], T]:
    # retrieve_fn(query, top_k); filters go by keyword if given. A function of the query
    # alone (the seed README's ``lambda q: store.similarity_search(q, k=5)``) gets the
    # query alone.
    if filters:
        return lambda: retrieve_fn(query, top_k, filters=filters)
    if _takes_one(retrieve_fn):
        return lambda: retrieve_fn(query)
    return lambda: retrieve_fn(query, top_k)


def _takes_one(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes exactly one positional argument (and no ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = inspect.Parameter
    positional = [
        p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is kinds.VAR_POSITIONAL for p in params):
        return False
    return len(positional) == 1 or (
        len(positional) > 1
        and all(p.default is not kinds.empty for p in positional[1:])
        and positional[1].name not in ("top_k", "k")
    )


class RetrievalCache(CacheLayer):
    """Cache of retriever results (documents, chunks, ids), shared cluster-wide.

    Entries are tagged ``retriever:<retriever_id>``; `invalidate_retriever` drops them
    all after a re-index. A miss returns ``default`` (the layer's `miss_value`: ``None`` over a
    `CacheManager`, `MISS` otherwise): an empty result list
    is a cached answer, not a miss.

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> rc = RetrievalCache(InMemoryBackend())
        >>> rc.get_or_retrieve("capital of France", lambda q, k: ["Paris"][:k], top_k=3)
        ['Paris']
        >>> rc.get("capital of France", top_k=3), rc.get("capital of France", top_k=4)
        (['Paris'], MISS)
    """

    layer = "retrieval"

    def get(
        self,
        query: Any,
        retriever_id: str = "default",
        top_k: int = 5,
        *,
        filters: Mapping[str, Any] | None = None,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> Any:
        """Return the cached results, or ``default`` on a miss."""
        return self._get_value(_retrieval_key(query, retriever_id, top_k, filters), default, config)

    def set(
        self,
        query: Any,
        documents: Any,
        retriever_id: str = "default",
        top_k: int = 5,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        filters: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> None:
        """Store the results of a query."""
        self._set_value(
            _retrieval_key(query, retriever_id, top_k, filters),
            documents,
            with_overrides(config, ttl, tags),
            [retriever_tag(retriever_id)],
        )

    def get_or_retrieve(
        self,
        query: Any,
        retrieve_fn: Callable[..., T],
        retriever_id: str = "default",
        top_k: int = 5,
        ttl: float | None = None,
        *,
        filters: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> T:
        """Return the cached results, or ``retrieve_fn(query, top_k[, filters=])``
        computed once in the whole cluster."""
        key = self._key(_retrieval_key(query, retriever_id, top_k, filters))
        return self._cached(
            key,
            _retrieve_call(retrieve_fn, query, top_k, filters),
            with_overrides(config, ttl, None),
            [retriever_tag(retriever_id)],
        )

    def invalidate_retriever(self, retriever_id: str) -> int:
        """Remove every cached result of ``retriever_id`` (this tenant)."""
        return self._invalidate(retriever_tag(retriever_id))

    async def aget(
        self,
        query: Any,
        retriever_id: str = "default",
        top_k: int = 5,
        *,
        filters: Mapping[str, Any] | None = None,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> Any:
        """Async `get`."""
        key_obj = _retrieval_key(query, retriever_id, top_k, filters)
        return await self._aget_value(key_obj, default, config)

    async def aset(
        self,
        query: Any,
        documents: Any,
        retriever_id: str = "default",
        top_k: int = 5,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        filters: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> None:
        """Async `set`."""
        await self._aset_value(
            _retrieval_key(query, retriever_id, top_k, filters),
            documents,
            with_overrides(config, ttl, tags),
            [retriever_tag(retriever_id)],
        )

    async def aget_or_retrieve(
        self,
        query: Any,
        retrieve_fn: Callable[..., T | Awaitable[T]],
        retriever_id: str = "default",
        top_k: int = 5,
        ttl: float | None = None,
        *,
        filters: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> T:
        """Async `get_or_retrieve`; ``retrieve_fn`` may be sync or async."""
        key = self._key(_retrieval_key(query, retriever_id, top_k, filters))
        return await self._acached(
            key,
            _retrieve_call(retrieve_fn, query, top_k, filters),
            with_overrides(config, ttl, None),
            [retriever_tag(retriever_id)],
        )

    async def ainvalidate_retriever(self, retriever_id: str) -> int:
        """Async `invalidate_retriever`."""
        return await self._ainvalidate(retriever_tag(retriever_id))
