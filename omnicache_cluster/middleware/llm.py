"""`LLMMiddleware` and `AsyncLLMMiddleware`: cache any LLM callable by its arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from omnicache_cluster.core.keys import CacheKeyBuilder
from omnicache_cluster.layers.response import ResponseCache
from omnicache_cluster.middleware._wrap import call_arguments, keep_signature
from omnicache_cluster.policies import RequestConfig

__all__ = ["AsyncLLMMiddleware", "LLMMiddleware"]

F = TypeVar("F", bound=Callable[..., Any])


class LLMMiddleware:
    """A decorator that caches an LLM callable in a `ResponseCache`, cluster-wide.

    The first argument of the call is the request's messages; every other argument
    (by parameter name, defaults filled in, so positional and keyword calls share
    entries) joins the middleware's ``params``. The entry is the `ResponseCache`
    entry of ``(messages, model_id, params)``, so a function of the messages alone
    is visible to ``response_cache.get(messages, model_id=...)``, as in the seed. On
    a miss the call runs once in the whole cluster (single-flight). The wrapper keeps
    the wrapped function's name, docstring and signature; ``async def`` functions
    get an async wrapper.

    Args:
        cache: the `ResponseCache` to use.
        key_builder: the seed's second argument; scopes the cache to its key
            namespace and tenant when given.
        model_id: the model the callable calls (part of the key and of its tag).
        params: extra key parts (sampling parameters fixed inside the callable).
        config: a `RequestConfig` for every call.

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> from omnicache_cluster.layers import ResponseCache
        >>> calls = []
        >>> @LLMMiddleware(ResponseCache(InMemoryBackend()), model_id="gpt-4o")
        ... def ask(question: str, temperature: float = 0.0) -> str:
        ...     calls.append(question)
        ...     return question.upper()
        >>> ask("hi"), ask(question="hi", temperature=0), len(calls)
        ('HI', 'HI', 1)
    """

    def __init__(
        self,
        cache: ResponseCache,
        key_builder: CacheKeyBuilder | None = None,
        model_id: str = "default",
        *,
        params: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> None:
        if not isinstance(cache, ResponseCache):
            raise TypeError(f"cache must be a ResponseCache, got {type(cache).__qualname__}")
        self.cache = cache.for_key_builder(key_builder) if key_builder is not None else cache
        self.model_id = model_id
        self.params = dict(params or {})
        self.config = config

    def _request(
        self, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """Return ``(messages, params)`` of one call."""
        arguments = call_arguments(signature, args, kwargs)
        messages = arguments.pop(next(iter(arguments))) if arguments else None
        return messages, {**self.params, **arguments}

    def __call__(self, fn: F) -> F:
        """Return ``fn`` wrapped (usable as ``@middleware`` or ``middleware(fn)``)."""
        signature = inspect.signature(fn)
        cache, model_id, config = self.cache, self.model_id, self.config

        def sync_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            messages, params = self._request(signature, args, kwargs)
            return cache.get_or_generate(
                messages, lambda _: fn(*args, **kwargs), model_id, params, config=config
            )

        async def async_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            messages, params = self._request(signature, args, kwargs)
            return await cache.aget_or_generate(
                messages, lambda _: fn(*args, **kwargs), model_id, params, config=config
            )

        return keep_signature(fn, sync_call, async_call)  # type: ignore[no-any-return]

    def decorate(self, fn: F) -> F:
        """The seed's name for ``middleware(fn)``."""
        return self(fn)


class AsyncLLMMiddleware(LLMMiddleware):
    """`LLMMiddleware` under the seed's async name: an ``async def`` callable gets an
    async wrapper, a plain one a plain wrapper (as in the seed).

    Example:
        >>> import asyncio, inspect
        >>> from omnicache_cluster import InMemoryBackend
        >>> from omnicache_cluster.layers import ResponseCache
        >>> @AsyncLLMMiddleware(ResponseCache(InMemoryBackend()), model_id="m")
        ... async def ask(q: str) -> str:
        ...     return q[::-1]
        >>> inspect.iscoroutinefunction(ask), asyncio.run(ask("abc"))
        (True, 'cba')
    """
