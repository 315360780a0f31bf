"""`EmbeddingCache`: numpy vectors keyed by model + text.

Vectors travel as raw bytes plus dtype and shape (the cluster's codec), so a
``float16`` vector comes back ``float16`` and a ``(3, 768)`` block keeps its shape.
`get_or_compute_many` is the batch path an embedding API wants: all texts are looked
up in one batch (one call per shard), and the embed function is called once, with
only the texts that missed, each once even if it repeats.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from omnicache_cluster.core.keys import CacheKey
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.layers._base import (
    LAYER_DEFAULT,
    CacheLayer,
    _maybe_await,
    config_of,
    with_overrides,
)
from omnicache_cluster.policies import RequestConfig, model_tag

if TYPE_CHECKING:
    import numpy as np

__all__ = ["EmbeddingCache"]

EmbedMany = Callable[[list[str]], Sequence[Any]]


def _embedding_key(
    text: str, model_id: str, params: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__qualname__}")
    key = {"model": model_id, "text": text}
    if params:  # e.g. ``dimensions``: another setting is another vector
        key["params"] = dict(params)
    return key


def as_vector(value: Any) -> np.ndarray:
    """Return ``value`` as a numeric numpy array (dtype and shape kept if it is one).

    Raises:
        TypeError: ``value`` is not numeric.
    """
    import numpy as np

    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.dtype.kind not in "fiuc":
        raise TypeError(f"an embedding must be numeric, got dtype {arr.dtype}")
    return arr


def _checked(texts: Sequence[str], vectors: Any) -> Any:
    if inspect.isawaitable(vectors):
        return _achecked(texts, vectors)
    if len(vectors) != len(texts):
        raise ValueError(
            f"the embed function returned {len(vectors)} vectors for {len(texts)} texts"
        )
    return [as_vector(v) for v in vectors]


async def _achecked(texts: Sequence[str], vectors: Awaitable[Sequence[Any]]) -> Any:
    return _checked(texts, await vectors)


def _one_fn(embed_fn: Any, compute_fn: Any) -> Any:
    if (embed_fn is None) == (compute_fn is None):
        raise TypeError("give the embed function once: embed_fn, or compute_fn= (the seed's name)")
    fn = embed_fn if embed_fn is not None else compute_fn
    if not callable(fn):
        raise TypeError(f"the embed function must be callable, got {fn!r}")
    return fn


class _Batch:
    """One `get_or_compute_many` call: which texts missed, and the merged result."""

    def __init__(
        self,
        texts: Sequence[str],
        keys: Sequence[CacheKey],
        values: Sequence[Any],
        check: Callable[[Any], Any] = as_vector,
    ):
        self.check = check
        self.texts = texts
        self.found: dict[str, Any] = {}
        self.keys: dict[str, CacheKey] = {}
        for text, key, value in zip(texts, keys, values, strict=True):
            self.keys[text] = key
            if value is not MISS:
                self.found[text] = value
        self.missing = [t for t in dict.fromkeys(texts) if t not in self.found]

    def fill(self, vectors: Sequence[Any]) -> list[tuple[CacheKey, Any]]:
        """Take the embed function's vectors for `missing`; return what to store."""
        if len(vectors) != len(self.missing):
            raise ValueError(
                f"the embed function returned {len(vectors)} vectors for {len(self.missing)} texts"
            )
        store = []
        for text, vector in zip(self.missing, vectors, strict=True):
            self.found[text] = self.check(vector)
            store.append((self.keys[text], self.found[text]))
        return store

    def result(self) -> list[np.ndarray]:
        return [self.found[t] for t in self.texts]

    def flight_fn(
        self, embed_fn: Callable[[list[str]], Any]
    ) -> tuple[Callable[[list[Any]], Any], list[int]]:
        """Wrap ``embed_fn`` for `CacheCluster.get_or_compute_many`: it takes the keys
        of missing texts; return it and a list that collects how many texts it embedded."""
        text_of = {self.keys[t]: t for t in self.missing}
        counts: list[int] = []

        def fn(keys: list[Any]) -> Any:
            texts = [text_of[k] for k in keys]
            counts.append(len(texts))
            return _checked(texts, embed_fn(texts))

        return fn, counts

    def take(self, vectors: Sequence[Any]) -> None:
        """Take the vectors of `missing` (computed, or another caller's)."""
        for text, vector in zip(self.missing, vectors, strict=True):
            self.found[text] = as_vector(vector)


class EmbeddingCache(CacheLayer):
    """Cache of embedding vectors, shared cluster-wide, tagged ``model:<model_id>``.

    Example:
        >>> import numpy as np
        >>> from omnicache_cluster import InMemoryBackend
        >>> ec = EmbeddingCache(InMemoryBackend())
        >>> embed = lambda texts: [np.full(2, len(t), dtype=np.float32) for t in texts]
        >>> [v.tolist() for v in ec.get_or_compute_many(["a", "bb"], embed)]
        [[1.0, 1.0], [2.0, 2.0]]
        >>> ec.get("bb").dtype
        dtype('float32')
    """

    layer = "embedding"

    def __init__(
        self,
        backend: Any,
        dim: int | None = None,
        *,
        ttl_policy: Any = None,
        layer: str | None = None,
    ) -> None:
        """Args:
        backend: a `CacheCluster`, an `InMemoryBackend` or a `CacheManager`.
        dim: the seed's vector dimension: when given, a vector of another size
            raises ``ValueError`` where it is stored (vectors keep dtype and shape).
        ttl_policy: ttls per layer (the manager's, or `TTLPolicy.from_env()`).
        layer: the key's layer part (``embedding``).
        """
        super().__init__(backend, ttl_policy=ttl_policy, layer=layer)
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0):
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim

    def _dim_checked(self, vector: Any) -> Any:
        arr = as_vector(vector)
        if self.dim is not None and arr.shape[-1:] != (self.dim,):
            raise ValueError(
                f"an embedding of this cache has {self.dim} values, got shape {arr.shape}"
            )
        return arr

    def _keys(
        self, texts: Iterable[str], model_id: str, params: Mapping[str, Any] | None
    ) -> tuple[list[str], list[CacheKey]]:
        texts = list(texts)
        return texts, [self._key(_embedding_key(t, model_id, params)) for t in texts]

    def get(
        self,
        text: str,
        model_id: str = "default",
        *,
        params: Mapping[str, Any] | None = None,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> Any:
        """Return the cached vector of ``text``, or ``default`` on a miss."""
        return self._get_value(_embedding_key(text, model_id, params), default, config)

    def get_many(
        self,
        texts: Iterable[str],
        model_id: str = "default",
        *,
        params: Mapping[str, Any] | None = None,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> list[Any]:
        """Return the cached vectors of ``texts`` in order (one batch)."""
        _, keys = self._keys(texts, model_id, params)
        return [
            self._or(default) if v is MISS else v
            for v in self._lookup_many(keys, config_of(config))
        ]

    def set(
        self,
        text: str,
        vector: Any,
        model_id: str = "default",
        ttl: float | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> None:
        """Store the vector of ``text`` (as a numpy array)."""
        self.set_many({text: vector}, model_id, ttl, params=params, config=config)

    def set_many(
        self,
        vectors: Mapping[str, Any],
        model_id: str = "default",
        ttl: float | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> None:
        """Store several vectors in one batch."""
        texts, keys = self._keys(vectors, model_id, params)
        batch = _Batch(texts, keys, [MISS] * len(texts), self._dim_checked)
        items = batch.fill([vectors[t] for t in batch.missing])
        self._store_many(items, with_overrides(config, ttl, None), [model_tag(model_id)])

    def get_or_compute(
        self,
        text: str,
        embed_fn: Callable[[str], Any] | None = None,
        model_id: str = "default",
        ttl: float | None = None,
        *,
        compute_fn: Callable[[str], Any] | None = None,
        params: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> np.ndarray:
        """Return the vector of ``text``, or ``embed_fn(text)`` computed once cluster-wide
        (``compute_fn=`` is the seed's name of ``embed_fn``)."""
        fn = _one_fn(embed_fn, compute_fn)
        key = self._key(_embedding_key(text, model_id, params))
        value = self._cached(
            key,
            lambda: self._dim_checked(fn(text)),
            with_overrides(config, ttl, None),
            [model_tag(model_id)],
        )
        return as_vector(value)

    def get_or_compute_many(
        self,
        texts: Iterable[str],
        embed_fn: EmbedMany,
        model_id: str = "default",
        *,
        params: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> list[np.ndarray]:
        """Return the vectors of ``texts`` in order; one batch lookup, and one call of
        ``embed_fn`` with exactly the texts that missed (none if all hit).

        Raises:
            ValueError: ``embed_fn`` returned another number of vectors.
        """
        config = config_of(config)
        texts, keys = self._keys(texts, model_id, params)
        batch = _Batch(texts, keys, self._lookup_many(keys, config))
        if not batch.missing:
            return batch.result()
        flight = getattr(self._backend, "get_or_compute_many", None)
        if flight is None or not config.writes:  # a local backend, or nothing to share
            self._count(computes=len(batch.missing))
            items = batch.fill(embed_fn(list(batch.missing)))
            self._store_many(items, config, [model_tag(model_id)])
            return batch.result()
        fn, counts = batch.flight_fn(embed_fn)
        keys = [batch.keys[t] for t in batch.missing]
        batch.take(flight(keys, fn, **self._write_args(config, [model_tag(model_id)])))
        self._count(computes=sum(counts), stores=sum(counts))
        return batch.result()

    async def aget(
        self,
        text: str,
        model_id: str = "default",
        *,
        params: Mapping[str, Any] | None = None,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> Any:
        """Async `get`."""
        return await self._aget_value(_embedding_key(text, model_id, params), default, config)

    async def aget_many(
        self,
        texts: Iterable[str],
        model_id: str = "default",
        *,
        params: Mapping[str, Any] | None = None,
        default: Any = LAYER_DEFAULT,
        config: RequestConfig | None = None,
    ) -> list[Any]:
        """Async `get_many`."""
        _, keys = self._keys(texts, model_id, params)
        values = await self._alookup_many(keys, config_of(config))
        return [self._or(default) if v is MISS else v for v in values]

    async def aset_many(
        self,
        vectors: Mapping[str, Any],
        model_id: str = "default",
        ttl: float | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> None:
        """Async `set_many`."""
        texts, keys = self._keys(vectors, model_id, params)
        batch = _Batch(texts, keys, [MISS] * len(texts), self._dim_checked)
        items = batch.fill([vectors[t] for t in batch.missing])
        await self._astore_many(items, with_overrides(config, ttl, None), [model_tag(model_id)])

    async def aset(
        self,
        text: str,
        vector: Any,
        model_id: str = "default",
        ttl: float | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> None:
        """Async `set`."""
        await self.aset_many({text: vector}, model_id, ttl, params=params, config=config)

    async def aget_or_compute(
        self,
        text: str,
        embed_fn: Callable[[str], Any | Awaitable[Any]] | None = None,
        model_id: str = "default",
        ttl: float | None = None,
        *,
        compute_fn: Callable[[str], Any | Awaitable[Any]] | None = None,
        params: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> np.ndarray:
        """Async `get_or_compute`; ``embed_fn`` may be sync or async."""
        fn = _one_fn(embed_fn, compute_fn)
        key = self._key(_embedding_key(text, model_id, params))

        async def compute() -> np.ndarray:
            return self._dim_checked(await _maybe_await(fn(text)))

        value = await self._acached(
            key, compute, with_overrides(config, ttl, None), [model_tag(model_id)]
        )
        return as_vector(value)

    async def aget_or_compute_many(
        self,
        texts: Iterable[str],
        embed_fn: Callable[[list[str]], Sequence[Any] | Awaitable[Sequence[Any]]],
        model_id: str = "default",
        *,
        params: Mapping[str, Any] | None = None,
        config: RequestConfig | None = None,
    ) -> list[np.ndarray]:
        """Async `get_or_compute_many`; ``embed_fn`` may be sync or async."""
        config = config_of(config)
        texts, keys = self._keys(texts, model_id, params)
        batch = _Batch(texts, keys, await self._alookup_many(keys, config))
        if not batch.missing:
            return batch.result()
        flight = getattr(self._backend, "aget_or_compute_many", None)
        if flight is None or not config.writes:
            self._count(computes=len(batch.missing))
            items = batch.fill(await _maybe_await(embed_fn(list(batch.missing))))
            await self._astore_many(items, config, [model_tag(model_id)])
            return batch.result()
        fn, counts = batch.flight_fn(embed_fn)
        keys = [batch.keys[t] for t in batch.missing]
        batch.take(await flight(keys, fn, **self._write_args(config, [model_tag(model_id)])))
        self._count(computes=sum(counts), stores=sum(counts))
        return batch.result()

    def invalidate_model(self, model_id: str) -> int:
        """Remove every cached vector of ``model_id`` (this tenant)."""
        return self._invalidate(model_tag(model_id))

    async def ainvalidate_model(self, model_id: str) -> int:
        """Async `invalidate_model`."""
        return await self._ainvalidate(model_tag(model_id))
