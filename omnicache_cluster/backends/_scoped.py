"""`ScopedBackend`: the user-facing `CacheBackend` over any `ByteStore`.

Every local backend (memory, disk, Redis, tiered) is this class over its own byte
store: keys and tags are scoped with `KeyScope` (``namespace:tenant:layer:digest``),
values are encoded once by the `Serializer` and stored as envelopes, and bytes that do
not decode are a miss plus a counted, sparingly logged fault, never an exception.
Views (`for_tenant`, `with_key_namespace`) share the store and the counters.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

from omnicache_cluster.backends.base import AsyncByteStore, ByteStore, Record
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.faults import FaultLog
from omnicache_cluster.core.scope import DEFAULT_LAYER, KeyScope, check_ttl
from omnicache_cluster.core.sentinel import MISS
from omnicache_cluster.errors import CodecError, ValueTooLarge

__all__ = ["ScopedBackend"]

_log = logging.getLogger("omnicache_cluster.backends")


class _Counters:
    """Hit, miss and set counts per tenant, shared by every view of one backend."""

    def __init__(self, what: str) -> None:
        self.lock = threading.Lock()
        self.tenants: dict[str, list[int]] = {}
        self.decode = FaultLog(what, _log)

    def add(self, tenant: str, hits: int, misses: int, sets: int) -> None:
        with self.lock:
            counts = self.tenants.setdefault(tenant, [0, 0, 0])
            counts[0] += hits
            counts[1] += misses
            counts[2] += sets

    def of(self, tenant: str | None) -> list[int]:
        with self.lock:
            if tenant is not None:
                return list(self.tenants.get(tenant, [0, 0, 0]))
            return [sum(c[i] for c in self.tenants.values()) for i in range(3)]


class ScopedBackend:
    """A tenant- and namespace-scoped cache over a byte store (see module docstring).

    Args:
        store: the byte store of the blocking methods.
        astore: its async twin, used by the ``a*`` methods.
        namespace: the key namespace.
        serializer: the value serializer (msgpack + lz4 by default).
        max_value_bytes: the largest encoded value accepted.
        clock: wall-clock seconds (expiry times are absolute), injectable for tests.
    """

    def __init__(
        self,
        store: ByteStore,
        astore: AsyncByteStore,
        *,
        namespace: str = "omnicache",
        serializer: Serializer | None = None,
        max_value_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(max_value_bytes, int) or max_value_bytes <= 0:
            raise ValueError(f"max_value_bytes must be a positive int, got {max_value_bytes!r}")
        self._store = store
        self._astore = astore
        self._scope = KeyScope(namespace, "default")
        self._ser = serializer or Serializer()
        self._max_value_bytes = max_value_bytes
        self._clock = clock
        self._admin = True
        self._counters = _Counters(type(self).__name__)

    # -- views and keys -----------------------------------------------------------------

    def _view(self, namespace: str, tenant: str, admin: bool) -> Self:
        view = copy.copy(self)  # same store, serializer and counters; another scope
        view._scope = KeyScope(namespace, tenant)
        view._admin = admin
        return view

    def for_tenant(self, tenant: str) -> Self:
        """Return a view scoped to ``tenant`` over the same store."""
        return self._view(self._scope.namespace, tenant, admin=False)

    def with_key_namespace(self, key_namespace: str) -> Self:
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

    @property
    def store(self) -> ByteStore:
        """The byte store under this backend (shared by all its views)."""
        return self._store

    @property
    def astore(self) -> AsyncByteStore:
        """The async twin of `store`."""
        return self._astore

    def key(self, key: Any, layer: str = DEFAULT_LAYER) -> str:
        """Return the stored key string of ``key`` in ``layer``."""
        return self._scope.key(key, layer)

    # -- the pure halves of every call --------------------------------------------------

    def _records(
        self,
        items: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        ttl: float | None,
        tags: Iterable[str] | None,
        layer: str,
    ) -> list[tuple[str, Record]]:
        ttl = check_ttl(ttl)
        scoped_tags = self._scope.tags(tags)
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded = []
        for k, v in pairs:
            data = self._ser.dumps(v)
            if len(data) > self._max_value_bytes:
                raise ValueTooLarge(len(data), self._max_value_bytes)
            encoded.append((self._scope.key(k, layer), data))
        expires_at = None if ttl is None else self._clock() + ttl
        tenant = self._scope.tenant
        return [(k, Record(d, expires_at, scoped_tags, tenant)) for k, d in encoded]

    def _decode(self, records: Sequence[Record | None], default: Any) -> list[Any]:
        out: list[Any] = []
        hits = 0
        for record in records:
            if record is None:
                out.append(default)
                continue
            try:
                out.append(self._ser.loads(record.value))
            except CodecError as exc:  # corrupt or refused bytes are a miss, not a crash
                self._counters.decode.record("decode", exc)
                out.append(default)
                continue
            hits += 1
        self._counters.add(self._scope.tenant, hits, len(out) - hits, 0)
        return out

    def _clear_prefix(self, all_tenants: bool) -> str:
        if all_tenants and not self._admin:
            raise PermissionError("a tenant-scoped backend cannot clear other tenants")
        return "" if all_tenants else self._scope.prefix

    def _stats(self, store_stats: dict[str, Any]) -> dict[str, Any]:
        tenant = None if self._admin else self._scope.tenant
        hits, misses, sets = self._counters.of(tenant)
        out: dict[str, Any] = {} if tenant is None else {"tenant": tenant}
        out.update(store_stats)
        lookups = hits + misses
        out.update(hits=hits, misses=misses, sets=sets, hit_rate=hits / lookups if lookups else 0.0)
        out["decode_errors"] = self._counters.decode.count
        return out

    # -- sync ---------------------------------------------------------------------------

    def get(self, key: Any, default: Any = MISS, *, layer: str = DEFAULT_LAYER) -> Any:
        """Return the value of ``key`` or ``default`` (`MISS`)."""
        return self.get_many([key], default, layer=layer)[0]

    def get_many(
        self, keys: Iterable[Any], default: Any = MISS, *, layer: str = DEFAULT_LAYER
    ) -> list[Any]:
        """Return the values of ``keys`` in order, ``default`` for each miss."""
        skeys = [self._scope.key(k, layer) for k in keys]
        return self._decode(self._store.get_many(skeys), default) if skeys else []

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
        records = self._records(items, ttl, tags, layer)
        if records:
            self._store.set_many(records)
            self._counters.add(self._scope.tenant, 0, 0, len(records))

    def delete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Remove ``key``; return whether it was present."""
        return self.delete_many([key], layer=layer) == 1

    def delete_many(self, keys: Iterable[Any], *, layer: str = DEFAULT_LAYER) -> int:
        """Remove ``keys``; return how many were present."""
        skeys = [self._scope.key(k, layer) for k in keys]
        return sum(self._store.delete_many(skeys)) if skeys else 0

    def exists(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Return whether ``key`` is present, without changing its recency."""
        return self._store.exists_many([self._scope.key(key, layer)])[0]

    def invalidate(self, tag: str) -> int:
        """Remove every entry of this tenant tagged ``tag``; return how many."""
        (scoped,) = self._scope.tags([tag])
        keys = self._store.tagged(scoped)
        return sum(self._store.delete_many(keys)) if keys else 0

    def clear(self, *, all_tenants: bool = False) -> int:
        """Remove this tenant's entries in this namespace (or all, for an admin view).

        Raises:
            PermissionError: ``all_tenants`` on a tenant-scoped view.
        """
        keys = self._store.keys(self._clear_prefix(all_tenants))
        return sum(self._store.delete_many(keys)) if keys else 0

    def stats(self) -> dict[str, Any]:
        """Return counters and levels (this tenant's only, for a scoped view)."""
        return self._stats(self._store.stats(None if self._admin else self._scope.tenant))

    def close(self) -> None:
        """Release the store's connections and files (the data stays)."""
        self._store.close()

    # -- async --------------------------------------------------------------------------

    async def aget(self, key: Any, default: Any = MISS, *, layer: str = DEFAULT_LAYER) -> Any:
        """Async `get`."""
        return (await self.aget_many([key], default, layer=layer))[0]

    async def aget_many(
        self, keys: Iterable[Any], default: Any = MISS, *, layer: str = DEFAULT_LAYER
    ) -> list[Any]:
        """Async `get_many`."""
        skeys = [self._scope.key(k, layer) for k in keys]
        return self._decode(await self._astore.get_many(skeys), default) if skeys else []

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
        await self.aset_many([(key, value)], ttl=ttl, tags=tags, layer=layer)

    async def aset_many(
        self,
        items: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Async `set_many`."""
        records = self._records(items, ttl, tags, layer)
        if records:
            await self._astore.set_many(records)
            self._counters.add(self._scope.tenant, 0, 0, len(records))

    async def adelete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Async `delete`."""
        return await self.adelete_many([key], layer=layer) == 1

    async def adelete_many(self, keys: Iterable[Any], *, layer: str = DEFAULT_LAYER) -> int:
        """Async `delete_many`."""
        skeys = [self._scope.key(k, layer) for k in keys]
        return sum(await self._astore.delete_many(skeys)) if skeys else 0

    async def aexists(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Async `exists`."""
        return (await self._astore.exists_many([self._scope.key(key, layer)]))[0]

    async def ainvalidate(self, tag: str) -> int:
        """Async `invalidate`."""
        (scoped,) = self._scope.tags([tag])
        keys = await self._astore.tagged(scoped)
        return sum(await self._astore.delete_many(keys)) if keys else 0

    async def aclear(self, *, all_tenants: bool = False) -> int:
        """Async `clear`."""
        keys = await self._astore.keys(self._clear_prefix(all_tenants))
        return sum(await self._astore.delete_many(keys)) if keys else 0

    async def astats(self) -> dict[str, Any]:
        """Async `stats`."""
        return self._stats(self._astore.stats(None if self._admin else self._scope.tenant))

    async def aclose(self) -> None:
        """Async `close`."""
        await self._astore.close()
