"""`InMemoryBackend`: the cluster's API in one process, for tests, scripts and laptops.

It is the same `LRUStore` a shard runs, behind the same key scoping and codec as
`CacheCluster`, so code written against one runs against the other. Values are stored
encoded: a caller mutating a returned list cannot change the cached copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.scope import DEFAULT_LAYER, KeyScope, check_ttl
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.core.store import LRUStore
from omnicache_cluster.errors import ValueTooLarge

__all__ = ["InMemoryBackend"]


class _Shared:
    """The store and lock shared by every scoped view of one backend."""

    def __init__(self, store: LRUStore) -> None:
        self.store = store
        self.lock = threading.RLock()
        self.tenant_counts: dict[str, list[int]] = {}


class InMemoryBackend:
    """A bytes-bounded LRU cache in this process, with TTL, tags and tenants.

    Args:
        max_bytes: the byte budget (LRU eviction past it).
        max_size: an optional bound on the number of entries (the seed's name).
        namespace: the key namespace.
        serializer: the value serializer (msgpack + lz4 by default).
        max_value_bytes: the largest encoded value accepted.
        clock: wall-clock seconds, injectable for tests.

    Example:
        >>> b = InMemoryBackend()
        >>> b.set("q", None)
        >>> b.get("q") is None, b.get("other")
        (True, MISS)
    """

    def __init__(
        self,
        max_bytes: int = 64 * 1024 * 1024,
        max_size: int | None = None,
        *,
        namespace: str = "omnicache",
        serializer: Serializer | None = None,
        max_value_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        _shared: _Shared | None = None,
        _tenant: str = "default",
        _admin: bool = True,
    ) -> None:
        self._shared = _shared or _Shared(LRUStore(max_bytes, max_size, clock=clock))
        self._scope = KeyScope(namespace, _tenant)
        self._ser = serializer or Serializer()
        self._max_value_bytes = max_value_bytes
        self._clock = clock
        self._admin = _admin

    def _view(self, namespace: str, tenant: str, admin: bool) -> InMemoryBackend:
        return InMemoryBackend(
            namespace=namespace,
            serializer=self._ser,
            max_value_bytes=self._max_value_bytes,
            clock=self._clock,
            _shared=self._shared,
            _tenant=tenant,
            _admin=admin,
        )

    def for_tenant(self, tenant: str) -> InMemoryBackend:
        """Return a view scoped to ``tenant`` over the same store."""
        return self._view(self._scope.namespace, tenant, admin=False)

    def with_key_namespace(self, key_namespace: str) -> InMemoryBackend:
        """Return a view of the same store and tenant under another key namespace."""
        return self._view(key_namespace, self._scope.tenant, admin=self._admin)

    @property
    def tenant(self) -> str:
        """The tenant of this view's keys."""
        return self._scope.tenant

    @property
    def key_namespace(self) -> str:
        """The namespace part of this view's keys."""
        return self._scope.namespace

    def key(self, key: Any, layer: str = DEFAULT_LAYER) -> str:
        """Return the stored key string of ``key`` in ``layer``."""
        return self._scope.key(key, layer)

    def _count(self, field: int, n: int = 1) -> None:
        counts = self._shared.tenant_counts.setdefault(self._scope.tenant, [0, 0, 0])
        counts[field] += n

    # -- sync -------------------------------------------------------------------------

    def get(self, key: Any, default: Any = MISS, *, layer: str = DEFAULT_LAYER) -> Any:
        """Return the value of ``key`` or ``default`` (`MISS`)."""
        return self.get_many([key], default, layer=layer)[0]

    def get_many(
        self, keys: Iterable[Any], default: Any = MISS, *, layer: str = DEFAULT_LAYER
    ) -> list[Any]:
        """Return the values of ``keys`` in order, ``default`` for each miss."""
        skeys = [self._scope.key(k, layer) for k in keys]
        with self._shared.lock:
            raw = [self._shared.store.get(k) for k in skeys]
            hits = sum(v is not None for v in raw)
            self._count(0, hits)
            self._count(1, len(raw) - hits)
        return [default if v is None else self._ser.loads(v) for v in raw]

    def set(
        self,
        key: Any,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store ``value`` under ``key`` (see `CacheCluster.set`)."""
        self.set_many([(key, value)], ttl=ttl, tags=tags, layer=layer)

    def set_many(
        self,
        items: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store several values; every one is validated before any is stored."""
        ttl = check_ttl(ttl)
        scoped_tags = self._scope.tags(tags)
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded = []
        for k, v in pairs:
            data = self._ser.dumps(v)
            if len(data) > self._max_value_bytes:
                raise ValueTooLarge(len(data), self._max_value_bytes)
            encoded.append((self._scope.key(k, layer), data))
        with self._shared.lock:
            expires_at = None if ttl is None else self._clock() + ttl
            for skey, data in encoded:
                self._shared.store.set(
                    skey, data, expires_at=expires_at, tags=scoped_tags, tenant=self._scope.tenant
                )
            self._count(2, len(encoded))

    def delete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Remove ``key``; return whether it was present."""
        return self.delete_many([key], layer=layer) == 1

    def delete_many(self, keys: Iterable[Any], *, layer: str = DEFAULT_LAYER) -> int:
        """Remove ``keys``; return how many were present."""
        skeys = [self._scope.key(k, layer) for k in keys]
        with self._shared.lock:
            return sum(self._shared.store.delete(k) for k in skeys)

    def exists(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Return whether ``key`` is present, without changing its recency."""
        skey = self._scope.key(key, layer)
        with self._shared.lock:
            return skey in self._shared.store

    def invalidate(self, tag: str) -> int:
        """Remove every entry of this tenant tagged ``tag``; return how many."""
        (scoped,) = self._scope.tags([tag])
        with self._shared.lock:
            return len(self._shared.store.invalidate_tag(scoped))

    def clear(self, *, all_tenants: bool = False) -> int:
        """Remove this tenant's entries (or all, for the unscoped backend)."""
        if all_tenants and not self._admin:
            raise PermissionError("a tenant-scoped backend cannot clear other tenants")
        prefix = self._scope.prefix
        with self._shared.lock:
            if all_tenants:
                return self._shared.store.clear()
            return self._shared.store.clear(lambda k, _e: k.startswith(prefix))

    def stats(self) -> dict[str, Any]:
        """Return counters and levels (this tenant's only, for a scoped view)."""
        with self._shared.lock:
            snap = self._shared.store.snapshot()
            if self._admin:
                hits, misses, sets = snap.hits, snap.misses, snap.sets
                out: dict[str, Any] = {"entries": snap.entries, "bytes": snap.bytes}
                out["evictions"] = snap.evictions
            else:
                tenant = self._scope.tenant
                hits, misses, sets = self._shared.tenant_counts.get(tenant, [0, 0, 0])
                out = {
                    "tenant": tenant,
                    "entries": snap.tenant_entries.get(tenant, 0),
                    "bytes": snap.tenant_bytes.get(tenant, 0),
                    "evictions": snap.tenant_evictions.get(tenant, 0),
                }
        lookups = hits + misses
        out.update(hits=hits, misses=misses, sets=sets, hit_rate=hits / lookups if lookups else 0.0)
        return out

    def close(self) -> None:
        """Nothing to release; present for the backend protocol."""

    # -- async: in-process work never waits on I/O, so these run inline ----------------

    async def aget(self, key: Any, default: Any = MISS, *, layer: str = DEFAULT_LAYER) -> Any:
        """Async `get`."""
        return self.get(key, default, layer=layer)

    async def aget_many(
        self, keys: Iterable[Any], default: Any = MISS, *, layer: str = DEFAULT_LAYER
    ) -> list[Any]:
        """Async `get_many`."""
        return self.get_many(keys, default, layer=layer)

    async def aset(
        self,
        key: Any,
        value: Any,
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Async `set`."""
        self.set(key, value, ttl=ttl, tags=tags, layer=layer)

    async def aset_many(
        self,
        items: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Async `set_many`."""
        self.set_many(items, ttl=ttl, tags=tags, layer=layer)

    async def adelete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Async `delete`."""
        return self.delete(key, layer=layer)

    async def adelete_many(self, keys: Iterable[Any], *, layer: str = DEFAULT_LAYER) -> int:
        """Async `delete_many`."""
        return self.delete_many(keys, layer=layer)

    async def aexists(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Async `exists`."""
        return self.exists(key, layer=layer)

    async def ainvalidate(self, tag: str) -> int:
        """Async `invalidate`."""
        return self.invalidate(tag)

    async def aclear(self, *, all_tenants: bool = False) -> int:
        """Async `clear`."""
        return self.clear(all_tenants=all_tenants)

    async def astats(self) -> dict[str, Any]:
        """Async `stats`."""
        return self.stats()
