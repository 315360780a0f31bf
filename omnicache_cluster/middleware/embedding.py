"""`EmbeddingMiddleware`: cache an embed function (one text or a batch, sync or async)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from omnicache_cluster.layers.embedding import EmbeddingCache
from omnicache_cluster.middleware._wrap import call_arguments, keep_signature
from omnicache_cluster.policies import RequestConfig

__all__ = ["EmbeddingMiddleware"]

F = TypeVar("F", bound=Callable[..., Any])


def _split(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Return ``(the text or texts, the other arguments by name)``."""
    arguments = call_arguments(signature, args, kwargs)
    if not arguments:
        raise TypeError("an embed function takes the text(s) as its first argument")
    return arguments.pop(next(iter(arguments))), arguments


class EmbeddingMiddleware:
    """A decorator that caches an embed function in an `EmbeddingCache`.

    The wrapped function's first argument is a text (``str``) or a list of texts. For
    a list, every text is looked up in one batch and the function is called once with
    only the texts that missed (the other arguments unchanged); the result keeps the
    input's order. Other arguments (``dimensions``...) are part of the key. Sync and
    async functions are both supported; the signature is kept.

    Args:
        cache: the `EmbeddingCache` to use.
        model_id: the embedding model (part of the key and of its tag).
        config: a `RequestConfig` for every call.

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> from omnicache_cluster.layers import EmbeddingCache
        >>> seen = []
        >>> @EmbeddingMiddleware(EmbeddingCache(InMemoryBackend()), model_id="e5")
        ... def embed(texts: list[str]) -> list[list[float]]:
        ...     seen.append(list(texts))
        ...     return [[float(len(t))] for t in texts]
        >>> _ = embed(["a", "bb"]); [v.tolist() for v in embed(["bb", "ccc"])], seen
        ([[2.0], [3.0]], [['a', 'bb'], ['ccc']])
    """

    def __init__(
        self,
        cache: EmbeddingCache,
        model_id: str = "default",
        *,
        config: RequestConfig | None = None,
    ) -> None:
        if not isinstance(cache, EmbeddingCache):
            raise TypeError(f"cache must be an EmbeddingCache, got {type(cache).__qualname__}")
        self.cache = cache
        self.model_id = model_id
        self.config = config

    def __call__(self, fn: F) -> F:
        """Return ``fn`` wrapped."""
        signature = inspect.signature(fn)
        cache, model_id, config = self.cache, self.model_id, self.config

        def sync_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            texts, rest = _split(signature, args, kwargs)
            if isinstance(texts, str):
                return cache.get_or_compute(
                    texts, lambda t: fn(t, **rest), model_id, params=rest, config=config
                )
            return cache.get_or_compute_many(
                texts, lambda ts: fn(ts, **rest), model_id, params=rest, config=config
            )

        async def async_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            texts, rest = _split(signature, args, kwargs)
            if isinstance(texts, str):
                return await cache.aget_or_compute(
                    texts, lambda t: fn(t, **rest), model_id, params=rest, config=config
                )
            return await cache.aget_or_compute_many(
                texts, lambda ts: fn(ts, **rest), model_id, params=rest, config=config
            )

        return keep_signature(fn, sync_call, async_call)  # type: ignore[no-any-return]

    def decorate(self, fn: F) -> F:
        """The seed's name for ``middleware(fn)``."""
        return self(fn)
