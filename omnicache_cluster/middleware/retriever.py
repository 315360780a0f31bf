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
    both supported; the signature is kept. A call that leaves out a ``top_k`` the
    retriever requires gets ``top_k`` (the seed's ``default_top_k``).

    Args:
        cache: the `RetrievalCache` to use.
        retriever_id: names the index (part of the key and of its tag, for
            `RetrievalCache.invalidate_retriever` after a re-index).
        default_top_k: the seed's name of ``top_k`` (either may be given).
        top_k_param: the name of the retriever's result-count parameter.
        top_k: the count used when the call gives none.
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
        retriever_id: str = "default",
        default_top_k: int | None = None,
        *,
        top_k_param: str = "top_k",
        top_k: int | None = None,
        config: RequestConfig | None = None,
    ) -> None:
        if not isinstance(cache, RetrievalCache):
            raise TypeError(f"cache must be a RetrievalCache, got {type(cache).__qualname__}")
        if default_top_k is not None and top_k is not None and default_top_k != top_k:
            raise ValueError("give top_k or default_top_k (the seed's name), not both")
        count = top_k if top_k is not None else default_top_k
        self.cache = cache
        self.retriever_id = retriever_id
        self.top_k_param = top_k_param
        self.top_k = 5 if count is None else count
        self.config = config

    def _fill_top_k(
        self, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Return ``kwargs`` with ``top_k`` added when the retriever requires it and
        the call leaves it out (the seed called ``retrieve(query, default_top_k)``)."""
        param = signature.parameters.get(self.top_k_param)
        if param is None or param.default is not inspect.Parameter.empty:
            return kwargs
        if self.top_k_param in kwargs:
            return kwargs
        try:
            signature.bind_partial(*args, **kwargs).arguments[self.top_k_param]
        except KeyError:
            return {**kwargs, self.top_k_param: self.top_k}
        return kwargs

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
            kwargs = self._fill_top_k(signature, args, kwargs)
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
            kwargs = self._fill_top_k(signature, args, kwargs)
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

    def decorate(self, fn: F) -> F:
        """The seed's name for ``middleware(fn)``."""
        return self(fn)
