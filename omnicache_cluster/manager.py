"""`CacheManager`: the seed's central API (``get/set/delete/invalidate``, metrics,
``for_tenant``) over any `CacheBackend`: the Ray cluster or one process's memory.

It takes the seed's constructor (``backend, key_builder, ttl_policy, eviction_policy,
vector_backend, invalidation_engine, semantic_threshold, compressor``) and call forms
(``get(key, semantic=, vector=)``, ``set(key, value, ttl, vector=, tags=,
cache_type=)``); a backend with only the seed's six methods is wrapped in a
`CustomBackend`. Differences from the seed, on purpose: a miss returns ``default``
(``None`` unless given; pass ``default=MISS`` to tell a miss from a cached ``None``),
``None`` can be cached, and async methods are real async calls.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from omnicache_cluster.core.keys import CacheKey, CacheKeyBuilder
from omnicache_cluster.core.scope import DEFAULT_LAYER
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.observability.cache_metrics import CacheMetrics
from omnicache_cluster.policies import EvictionPolicy, InvalidationEngine, TTLPolicy
from omnicache_cluster.protocols import CacheBackend

if TYPE_CHECKING:
    from omnicache_cluster.config import OmnicacheSettings
    from omnicache_cluster.core.compressor import Compressor

__all__ = ["CacheManager", "CacheMetrics"]


_UNSET: Any = object()


def _as_backend(backend: Any, namespace: str) -> CacheBackend:
    """Return ``backend`` as a `CacheBackend`, wrapping a seed-style six-method one."""
    if backend is None:
        from omnicache_cluster.backends.memory import InMemoryBackend

        return InMemoryBackend(namespace=namespace)
    if isinstance(backend, CacheBackend):
        return backend
    from omnicache_cluster.backends.custom import CustomBackend, is_seed_backend

    if is_seed_backend(backend):
        return CustomBackend(backend, namespace=namespace)
    raise TypeError(
        f"backend must be a CacheCluster, an InMemoryBackend or another CacheBackend, or "
        f"an object with the seed's methods get, set, delete, exists, clear and close; "
        f"got {type(backend).__qualname__}"
    )


class CacheManager:
    """The seed's orchestrator over a `CacheBackend`.

    Args:
        backend: a `CacheCluster`, an `InMemoryBackend` (a new one when omitted), or
            an object with the seed's six backend methods (wrapped in a
            `CustomBackend`).
        key_builder: sets the key namespace and tenant of this manager.
        ttl_policy: ttls per layer (``cache_type``); the seed's `TTLPolicy` default
            (3600 s for every layer) when omitted.
        eviction_policy: kept for the seed's code; it acts where it is given to
            `InMemoryBackend` (as in the seed), and is refused with a backend that
            cannot apply it.
        vector_backend: a vector store with the seed's ``add`` / ``search`` (e.g.
            `FAISSBackend`) for ``set(..., vector=)`` and ``get(..., semantic=True,
            vector=)``.
        invalidation_engine: the seed's tag index; tags work without one (every
            backend keeps them), and keys `InvalidationEngine.register`-ed in it are
            removed by `invalidate` too.
        semantic_threshold: the least cosine score of a ``semantic=True`` hit.
        compressor: compresses the ``bytes`` values this manager stores (the seed's
            `GzipCompressor`); every value is lz4-compressed by the codec anyway.
        default_ttl: this package's name for ``ttl_policy``'s default.
        layer_ttls: this package's name for ``ttl_policy``'s per-layer ttls.

    Example:
        >>> from omnicache_cluster import InMemoryBackend
        >>> m = CacheManager(InMemoryBackend(), CacheKeyBuilder(namespace="app"))
        >>> m.set("key", "val"); m.get("key"), m.get("missing")
        ('val', None)
        >>> m.metrics.snapshot()["hit_rate"]
        0.5
    """

    def __init__(
        self,
        backend: Any = None,
        key_builder: CacheKeyBuilder | None = None,
        ttl_policy: TTLPolicy | None = None,
        eviction_policy: EvictionPolicy | None = None,
        vector_backend: Any = None,
        invalidation_engine: InvalidationEngine | None = None,
        semantic_threshold: float = 0.95,
        compressor: Compressor | None = None,
        *,
        default_ttl: float | None = _UNSET,
        layer_ttls: Mapping[str, float | None] | None = None,
    ) -> None:
        namespace = key_builder.namespace if key_builder is not None else "omnicache"
        backend = _as_backend(backend, namespace)
        self._key_builder = key_builder or CacheKeyBuilder(namespace=backend.key_namespace)
        kb = self._key_builder
        scoped = (
            backend
            if backend.key_namespace == kb.namespace
            else backend.with_key_namespace(kb.namespace)
        )
        if scoped.tenant != kb.tenant:
            scoped = scoped.for_tenant(kb.tenant)
        self._root = backend
        self._backend = scoped
        self._ttl_policy = _ttl_policy(ttl_policy, default_ttl, layer_ttls)
        self._eviction_policy = _check_eviction(eviction_policy, backend)
        self._vector_backend = _check_vector(vector_backend)
        self._invalidation = _check_engine(invalidation_engine)
        self._threshold = _check_threshold(semantic_threshold)
        self._compressor = _check_compressor(compressor)
        self.metrics = CacheMetrics(self._evictions)

    @classmethod
    def from_settings(
        cls, settings: OmnicacheSettings | None = None, backend: CacheBackend | None = None
    ) -> CacheManager:
        """Return a manager as `OmnicacheSettings` describe it: the backend, key
        namespace and hash, ttls, semantic threshold and vector backend.

        Args:
            settings: the settings (``OmnicacheSettings.from_env()`` when omitted).
            backend: the backend to use, e.g. a `CacheCluster` started with the same
                settings; by default the one ``settings.backend`` names (memory, disk
                or Redis, in this process).

        Raises:
            ConfigError: an environment variable has an invalid value (named).
        """
        from omnicache_cluster.config import OmnicacheSettings

        settings = settings if settings is not None else OmnicacheSettings.from_env()
        return cls(
            backend if backend is not None else settings.make_backend(),
            CacheKeyBuilder(namespace=settings.namespace, algo=settings.key_hash_algo),
            TTLPolicy.from_settings(settings),
            vector_backend=settings.make_vector_backend(),
            semantic_threshold=settings.semantic_threshold,
        )

    def _evictions(self) -> int:
        ev = self._backend.stats().get("evictions", {})
        return sum(ev.values()) if isinstance(ev, dict) else int(ev)

    @property
    def backend(self) -> CacheBackend:
        """The backend view this manager reads and writes."""
        return self._backend

    @property
    def key_builder(self) -> CacheKeyBuilder:
        """The key builder (namespace and tenant) of this manager."""
        return self._key_builder

    @property
    def ttl_policy(self) -> TTLPolicy:
        """The ttls of this manager's writes (and of layers built over it)."""
        return self._ttl_policy

    @property
    def eviction_policy(self) -> EvictionPolicy | None:
        """The eviction policy this manager was given."""
        return self._eviction_policy

    @property
    def vector_backend(self) -> Any:
        """The vector store of ``semantic=True`` lookups, if any."""
        return self._vector_backend

    @property
    def semantic_threshold(self) -> float:
        """The least cosine score of a ``semantic=True`` hit (and the default of
        semantic caches built over this manager)."""
        return self._threshold

    def for_tenant(self, tenant: str) -> CacheManager:
        """Return a manager scoped to ``tenant``, with its own metrics."""
        return CacheManager(
            self._backend.for_tenant(tenant),
            self._key_builder.for_tenant(tenant),
            self._ttl_policy,
            self._eviction_policy,
            self._vector_backend,
            self._invalidation,
            self._threshold,
            self._compressor,
        )

    def _ttl(self, ttl: float | None, cache_type: str | None, layer: str) -> float | None:
        if ttl is not None:
            return ttl
        if cache_type is None:  # the seed's default cache_type is "response"
            cache_type = "response" if layer == DEFAULT_LAYER else layer
        return self._ttl_policy.ttl_for(cache_type)

    def _semantic_key(self, vector: Any) -> CacheKey | None:
        results = self._vector_backend.search(vector, top_k=1)
        if results:
            best, score = results[0]
            if score >= self._threshold:
                try:
                    return CacheKey.parse(best)
                except ValueError:
                    return None
        return None

    def _unpack(self, value: Any) -> Any:
        if self._compressor is not None and isinstance(value, bytes):
            return self._compressor.decompress(value)
        return value

    def _pack(self, value: Any) -> Any:
        if self._compressor is not None and isinstance(value, bytes | bytearray):
            return self._compressor.compress(bytes(value))
        return value

    def get(
        self,
        key: Any,
        semantic: bool = False,
        vector: Any = None,
        *,
        default: Any = None,
        layer: str = DEFAULT_LAYER,
    ) -> Any:
        """Return the value of ``key``, or ``default`` on a miss.

        Args:
            key: the key (anything with a canonical encoding, or a `CacheKey`).
            semantic: look up the nearest stored ``vector`` instead of ``key`` (the
                seed's form); without ``vector_backend`` or ``vector`` it is an exact
                lookup of ``key``, as in the seed.
            vector: the query embedding of a semantic lookup.
            default: returned on a miss (``MISS`` tells a miss from a cached ``None``).
            layer: the key's layer part.
        """
        if semantic and self._vector_backend is not None and vector is not None:
            skey = self._semantic_key(vector)
            value = MISS if skey is None else self._backend.get(skey, MISS, layer=skey.layer)
        else:
            value = self._backend.get(key, MISS, layer=layer)
        if value is MISS:
            self.metrics.record(misses=1)
            return default
        self.metrics.record(hits=1)
        return self._unpack(value)

    def set(
        self,
        key: Any,
        value: Any,
        ttl: float | None = None,
        vector: Any = None,
        tags: Iterable[str] | None = None,
        cache_type: str | None = None,
        *,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store ``value`` under ``key``.

        Args:
            key: the key.
            value: the value (``bytes`` are compressed by ``compressor``, if given).
            ttl: seconds to live; by default the ``ttl_policy``'s for ``cache_type``.
            vector: also index ``key`` under this embedding (needs ``vector_backend``).
            tags: invalidation tags.
            cache_type: the `TTLPolicy` entry of a write without ``ttl``: by default
                ``layer``, or ``"response"`` (the seed's default) for the default layer.
            layer: the key's layer part.

        Raises:
            TypeError: the value cannot be encoded (names its type), or ``tags`` is
                a single str.
            ValueError: ``vector=`` without a ``vector_backend``.
        """
        if isinstance(tags, str):
            raise TypeError("tags must be a list of str, not a single str")
        if vector is not None and self._vector_backend is None:
            raise ValueError("set(vector=) needs a manager built with vector_backend=")
        effective = self._ttl(ttl, cache_type, layer)
        self._backend.set(key, self._pack(value), ttl=effective, tags=tags, layer=layer)
        self.metrics.record(sets=1)
        if vector is not None:
            stored = self._backend.key(key, layer)
            expires = None if effective is None else time.time() + effective
            _vector_add(self._vector_backend, stored, vector, expires)

    def delete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Remove ``key`` (and its vector); return whether it was present."""
        if self._vector_backend is not None:
            self._vector_backend.delete(self._backend.key(key, layer))
        return self._backend.delete(key, layer=layer)

    def exists(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Return whether ``key`` is present."""
        return self._backend.exists(key, layer=layer)

    def invalidate(self, tag: str) -> int:
        """Remove every entry of this manager's tenant tagged ``tag`` (and the keys
        registered under it in the ``invalidation_engine``); return how many."""
        removed = self._backend.invalidate(tag)
        if self._invalidation is not None:
            for key in self._invalidation.registered(tag):
                removed += int(self._invalidation.invalidate_key(key, self._backend))
        return removed

    def clear(self) -> int:
        """Remove this manager's tenant's entries in its namespace (and the vectors)."""
        if self._vector_backend is not None:
            self._vector_backend.clear()
        return self._backend.clear()

    async def aget(self, key: Any, default: Any = None, *, layer: str = DEFAULT_LAYER) -> Any:
        """Async `get` (exact keys)."""
        value = await self._backend.aget(key, MISS, layer=layer)
        if value is MISS:
            self.metrics.record(misses=1)
            return default
        self.metrics.record(hits=1)
        return self._unpack(value)

    async def aset(
        self,
        key: Any,
        value: Any,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        cache_type: str | None = None,
        *,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Async `set` (without ``vector=``)."""
        if isinstance(tags, str):
            raise TypeError("tags must be a list of str, not a single str")
        effective = self._ttl(ttl, cache_type, layer)
        await self._backend.aset(key, self._pack(value), ttl=effective, tags=tags, layer=layer)
        self.metrics.record(sets=1)

    async def adelete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Async `delete`."""
        return await self._backend.adelete(key, layer=layer)

    async def ainvalidate(self, tag: str) -> int:
        """Async `invalidate`."""
        return await self._backend.ainvalidate(tag)

    def close(self) -> None:
        """Release nothing the backend's owner still uses (the cluster stays up)."""


def _ttl_policy(
    policy: TTLPolicy | None, default_ttl: Any, layer_ttls: Mapping[str, float | None] | None
) -> TTLPolicy:
    if policy is not None:
        if default_ttl is not _UNSET or layer_ttls is not None:
            raise ValueError("give ttl_policy or default_ttl / layer_ttls, not both")
        if not isinstance(policy, TTLPolicy):
            raise TypeError(f"ttl_policy must be a TTLPolicy, got {type(policy).__qualname__}")
        return policy
    if default_ttl is _UNSET:
        return TTLPolicy(per_layer=layer_ttls)
    return TTLPolicy(default_ttl, layer_ttls)


def _check_eviction(policy: Any, backend: Any) -> EvictionPolicy | None:
    if policy is None:
        return None
    if not isinstance(policy, EvictionPolicy):
        raise TypeError(f"eviction_policy must be an EvictionPolicy, got {policy!r}")
    applied = getattr(backend, "eviction_policy", None)
    if applied != policy:
        raise ValueError(
            "CacheManager(eviction_policy=) does not change a backend that exists already: "
            "pass it where the entries live, InMemoryBackend(eviction_policy=...) "
            "(CacheManager.from_settings does this from max_memory_entries)"
        )
    return policy


def _check_vector(vector_backend: Any) -> Any:
    if vector_backend is None:
        return None
    missing = [n for n in ("add", "search", "delete", "clear") if not hasattr(vector_backend, n)]
    if missing:
        raise TypeError(
            f"vector_backend must have the seed's add, search, delete and clear "
            f"(FAISSBackend, ChromaBackend...); {type(vector_backend).__qualname__} lacks "
            f"{', '.join(missing)}"
        )
    return vector_backend


def _check_engine(engine: Any) -> InvalidationEngine | None:
    if engine is not None and not isinstance(engine, InvalidationEngine):
        raise TypeError(
            f"invalidation_engine must be an InvalidationEngine, got {type(engine).__qualname__}"
        )
    return engine


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValueError(f"semantic_threshold must be a number in [0, 1], got {threshold!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"semantic_threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def _check_compressor(compressor: Any) -> Compressor | None:
    if compressor is None:
        return None
    from omnicache_cluster.core.compressor import NoopCompressor

    if isinstance(compressor, NoopCompressor):
        return None
    if not (
        callable(getattr(compressor, "compress", None))
        and callable(getattr(compressor, "decompress", None))
    ):
        raise TypeError(f"compressor must have compress() and decompress(), got {compressor!r}")
    return compressor  # type: ignore[no-any-return]


def _vector_add(vector_backend: Any, key: str, vector: Any, expires_at: float | None) -> None:
    try:
        vector_backend.add(key, vector, None, expires_at=expires_at)
    except TypeError:  # a vector store with exactly the seed's signature
        vector_backend.add(key, vector, None)
