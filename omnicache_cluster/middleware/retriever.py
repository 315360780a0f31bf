"""`RetrieverMiddleware`: cache a retriever function (sync or async) by its arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from omnicache_cluster.layers.retrieval import RetrievalCache
from omnicache_cluster.middleware._wrap import call_arguments, keep_signature
from omnicache_cluster.policies import RequestConfig

__all__ = ["RetrieverMiddleware"]

F = TypeVar("F", bound=Callable[..., Any])


class RetrieverMiddleware:
    """A decorator that caches a retriever in a `RetrievalCache`.

    The first argument is the query; the ``top_k`` argument (named by
    ``top_k_param``) is the result count; every other argument (metadata filters,
    namespaces...) is part of the key as a filter. Sync and async retrievers are
    both supported; the signature is kept.

    Args:
        cache: the `RetrievalCache` to use.
        retriever_id: names the index (part of the key and of its tag, for
            `RetrievalCache.invalidate_retriever` after a re-index).
        top_k_param: the name of the retriever's result-count parameter.
        top_k: the count used when the retriever has no such parameter.
        config: a `RequestConfig` for every call.

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> from omnicache_cluster.layers import RetrievalCache
        >>> calls = []
        >>> @RetrieverMiddleware(RetrievalCache(InMemoryBackend()), retriever_id="docs")
        ... def search(query: str, top_k: int = 2, lang: str = "en") -> list[str]:
        ...     calls.append(query)
        ...     return [f"{query}-{i}" for i in range(top_k)]
        >>> search("ray"), search("ray", top_k=2), search("ray", lang="de"), len(calls)
        (['ray-0', 'ray-1'], ['ray-0', 'ray-1'], ['ray-0', 'ray-1'], 2)
    """

    def __init__(
        self,
        cache: RetrievalCache,
        *,
        retriever_id: str = "default",
        top_k_param: str = "top_k",
        top_k: int = 5,
        config: RequestConfig | None = None,
    ) -> None:
        if not isinstance(cache, RetrievalCache):
            raise TypeError(f"cache must be a RetrievalCache, got {type(cache).__qualname__}")
        self.cache = cache
        self.retriever_id = retriever_id
        self.top_k_param = top_k_param
        self.top_k = top_k
        self.config = config

    def _request(
        self, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, int, dict[str, Any]]:
        arguments = call_arguments(signature, args, kwargs)
        if not arguments:
            raise TypeError("a retriever takes the query as its first argument")
        query = arguments.pop(next(iter(arguments)))
        top_k = arguments.pop(self.top_k_param, self.top_k)
        return query, top_k, arguments

    def __call__(self, fn: F) -> F:
        """Return ``fn`` wrapped."""
        signature = inspect.signature(fn)
        cache, rid, config = self.cache, self.retriever_id, self.config

        def sync_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            query, top_k, filters = self._request(signature, args, kwargs)
            return cache.get_or_retrieve(
                query,
                lambda *_, **__: fn(*args, **kwargs),
                rid,
                top_k,
                filters=filters,
                config=config,
            )

        async def async_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            query, top_k, filters = self._request(signature, args, kwargs)
            return await cache.aget_or_retrieve(
                query,
                lambda *_, **__: fn(*args, **kwargs),
                rid,
                top_k,
                filters=filters,
                config=config,
            )

        return keep_signature(fn, sync_call, async_call)  # type: ignore[no-any-return]
