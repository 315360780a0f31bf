"""`CacheManager`: the seed's central API (``get/set/delete/invalidate``, metrics,
``for_tenant``) over any `CacheBackend`: the Ray cluster or one process's memory.

Differences from the seed, on purpose: a miss returns ``default`` (``None`` unless
given; pass ``default=MISS`` to tell a miss from a cached ``None``), ``None`` can be
cached, and async methods are real async calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from omnicache_cluster.core.keys import CacheKeyBuilder
from omnicache_cluster.core.scope import DEFAULT_LAYER
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.observability.cache_metrics import CacheMetrics
from omnicache_cluster.protocols import CacheBackend

if TYPE_CHECKING:
    from omnicache_cluster.config import OmnicacheSettings

__all__ = ["CacheManager", "CacheMetrics"]


class CacheManager:
    """The seed's orchestrator over a `CacheBackend`.

    Args:
        backend: a `CacheCluster` or an `InMemoryBackend` (a new one when omitted).
        key_builder: sets the key namespace and tenant of this manager.
        default_ttl: seconds to live for `set` calls that give no ttl.
        layer_ttls: per-layer overrides of ``default_ttl`` (``None``: no expiry).

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
        backend: CacheBackend | None = None,
        key_builder: CacheKeyBuilder | None = None,
        *,
        default_ttl: float | None = None,
        layer_ttls: Mapping[str, float | None] | None = None,
    ) -> None:
        if backend is None:
            from omnicache_cluster.backends.memory import InMemoryBackend

            backend = InMemoryBackend()
        if not isinstance(backend, CacheBackend):
            raise TypeError(
                f"backend must be a CacheCluster, an InMemoryBackend or another CacheBackend, "
                f"got {type(backend).__qualname__}"
            )
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
        self._default_ttl = default_ttl
        self._layer_ttls = dict(layer_ttls or {})
        self.metrics = CacheMetrics(self._evictions)

    @classmethod
    def from_settings(
        cls, settings: OmnicacheSettings | None = None, backend: CacheBackend | None = None
    ) -> CacheManager:
        """Return a manager as `OmnicacheSettings` describe it.

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
            CacheKeyBuilder(namespace=settings.namespace),
            default_ttl=settings.default_ttl,
            layer_ttls=settings.layer_ttls,
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

    def for_tenant(self, tenant: str) -> CacheManager:
        """Return a manager scoped to ``tenant``, with its own metrics."""
        return CacheManager(
            self._backend.for_tenant(tenant),
            self._key_builder.for_tenant(tenant),
            default_ttl=self._default_ttl,
            layer_ttls=self._layer_ttls,
        )

    def _ttl(self, ttl: float | None, layer: str = DEFAULT_LAYER) -> float | None:
        if ttl is not None:
            return ttl
        return self._layer_ttls.get(layer, self._default_ttl)

    def get(self, key: Any, default: Any = None, *, layer: str = DEFAULT_LAYER) -> Any:
        """Return the value of ``key``, or ``default`` on a miss."""
        value = self._backend.get(key, MISS, layer=layer)
        if value is MISS:
            self.metrics.record(misses=1)
            return default
        self.metrics.record(hits=1)
        return value

    def set(
        self,
        key: Any,
        value: Any,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store ``value`` under ``key`` (``ttl`` defaults to the manager's)."""
        self._backend.set(key, value, ttl=self._ttl(ttl, layer), tags=tags, layer=layer)
        self.metrics.record(sets=1)

    def delete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Remove ``key``; return whether it was present."""
        return self._backend.delete(key, layer=layer)

    def exists(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Return whether ``key`` is present."""
        return self._backend.exists(key, layer=layer)

    def invalidate(self, tag: str) -> int:
        """Remove every entry of this manager's tenant tagged ``tag``; return how many."""
        return self._backend.invalidate(tag)

    def clear(self) -> int:
        """Remove this manager's tenant's entries in its namespace."""
        return self._backend.clear()

    async def aget(self, key: Any, default: Any = None, *, layer: str = DEFAULT_LAYER) -> Any:
        """Async `get`."""
        value = await self._backend.aget(key, MISS, layer=layer)
        if value is MISS:
            self.metrics.record(misses=1)
            return default
        self.metrics.record(hits=1)
        return value

    async def aset(
        self,
        key: Any,
        value: Any,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        *,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Async `set`."""
        await self._backend.aset(key, value, ttl=self._ttl(ttl, layer), tags=tags, layer=layer)
        self.metrics.record(sets=1)

    async def adelete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Async `delete`."""
        return await self._backend.adelete(key, layer=layer)

    async def ainvalidate(self, tag: str) -> int:
        """Async `invalidate`."""
        return await self._backend.ainvalidate(tag)

    def close(self) -> None:
        """Release nothing the backend's owner still uses (the cluster stays up)."""
