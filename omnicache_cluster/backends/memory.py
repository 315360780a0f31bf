"""`InMemoryBackend`: the cluster's API in one process, for tests, scripts and laptops.

It is the same `LRUStore` a shard runs, behind the same key scoping and codec as
`CacheCluster`, so code written against one runs against the other. Values are stored
encoded: a caller mutating a returned list cannot change the cached copy.

`MemoryStore` is the `ByteStore` over an `LRUStore` (the L1 of a `TieredBackend`),
`AsyncMemoryStore` its async twin: in-process work never waits on I/O, so it runs
inline, on the caller's event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from omnicache_cluster.backends._local_flight import LocalSingleFlight
from omnicache_cluster.backends._scoped import ScopedBackend
from omnicache_cluster.backends.base import Record
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.scope import DEFAULT_LAYER
from omnicache_cluster.core.store import Entry, LRUStore

if TYPE_CHECKING:
    from omnicache_cluster.policies import EvictionPolicy

__all__ = ["AsyncMemoryStore", "InMemoryBackend", "MemoryStore"]


class MemoryStore:
    """A `ByteStore` in this process: an `LRUStore` (bytes-bounded, TTL, tags) and a lock.

    Args:
        store: the LRU store to use.
    """

    def __init__(self, store: LRUStore) -> None:
        self._lru = store
        self._lock = threading.RLock()

    def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Return the live record of each key and mark it recently used."""
        out: list[Record | None] = []
        with self._lock:
            lru = self._lru
            for key in keys:
                entry = lru.get_entry(key) if lru.get(key) is not None else None
                out.append(
                    None
                    if entry is None
                    else Record(entry.value, entry.expires_at, entry.tags, entry.tenant)
                )
        return out

    def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Store each record, evicting least recently used entries to fit.

        Raises:
            ValueTooLarge: an entry alone is larger than the store; the ones before
                it are stored.
        """
        with self._lock:
            for key, r in items:
                self._lru.set(key, r.value, expires_at=r.expires_at, tags=r.tags, tenant=r.tenant)

    def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Remove keys; return, per key, whether a live entry was there."""
        with self._lock:
            return [self._lru.delete(k) for k in keys]

    def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Return, per key, whether a live entry is there (recency unchanged)."""
        with self._lock:
            return [k in self._lru for k in keys]

    def tagged(self, tag: str) -> list[str]:
        """Return the keys of the live entries carrying ``tag``."""
        with self._lock:
            return self._lru.tagged(tag)

    def keys(self, prefix: str = "") -> list[str]:
        """Return the keys of the live entries starting with ``prefix``."""
        with self._lock:
            lru = self._lru
            return [k for k in list(lru.keys()) if k.startswith(prefix) and k in lru]

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """Return entries, bytes and evictions (by reason; a count for ``tenant``)."""
        with self._lock:
            snap = self._lru.snapshot()
        if tenant is None:
            return {"entries": snap.entries, "bytes": snap.bytes, "evictions": snap.evictions}
        return {
            "entries": snap.tenant_entries.get(tenant, 0),
            "bytes": snap.tenant_bytes.get(tenant, 0),
            "evictions": snap.tenant_evictions.get(tenant, 0),
        }

    def close(self) -> None:
        """Nothing to release."""


class AsyncMemoryStore:
    """The async twin of `MemoryStore`, over the same store; runs inline."""

    def __init__(self, store: MemoryStore) -> None:
        self._s = store

    async def get_many(self, keys: Sequence[str]) -> list[Record | None]:
        """Async `MemoryStore.get_many`."""
        return self._s.get_many(keys)

    async def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        """Async `MemoryStore.set_many`."""
        self._s.set_many(items)

    async def delete_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `MemoryStore.delete_many`."""
        return self._s.delete_many(keys)

    async def exists_many(self, keys: Sequence[str]) -> list[bool]:
        """Async `MemoryStore.exists_many`."""
        return self._s.exists_many(keys)

    async def tagged(self, tag: str) -> list[str]:
        """Async `MemoryStore.tagged`."""
        return self._s.tagged(tag)

    async def keys(self, prefix: str = "") -> list[str]:
        """Async `MemoryStore.keys`."""
        return self._s.keys(prefix)

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """`MemoryStore.stats`."""
        return self._s.stats(tenant)

    async def close(self) -> None:
        """Nothing to release."""


class InMemoryBackend(LocalSingleFlight, ScopedBackend):
    """A bytes-bounded LRU cache in this process, with TTL, tags and tenants.

    The seed's call forms work: ``InMemoryBackend(1000)`` and
    ``InMemoryBackend(max_size=1000)`` bound the number of entries,
    ``eviction_policy=`` and ``on_evict=`` act as in the seed, and
    ``set(key, value, 60)`` takes the ttl positionally. On a miss ``get`` returns
    `MISS` (``default=None`` gives the seed's ``None``).

    Args:
        max_size: the most entries (LRU eviction past it); ``None``: no count bound.
        eviction_policy: the seed's `EvictionPolicy`: ``"lru"`` with its
            ``max_entries`` (which wins over ``max_size``), or ``"ttl_only"`` (no
            count bound); its ``max_bytes`` sets ``max_bytes``.
        on_evict: called with the stored key string of every entry evicted to make
            room (not for expiry), after the write that evicted it.
        max_bytes: the byte budget (LRU eviction past it).
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
        max_size: int | None = None,
        eviction_policy: EvictionPolicy | None = None,
        on_evict: Callable[[str], None] | None = None,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        namespace: str = "omnicache",
        serializer: Serializer | None = None,
        max_value_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if eviction_policy is not None:
            from omnicache_cluster.policies import EvictionPolicy

            if not isinstance(eviction_policy, EvictionPolicy):
                raise TypeError(
                    f"eviction_policy must be an EvictionPolicy, got {eviction_policy!r}"
                )
            if eviction_policy.strategy == "ttl_only":
                max_size = None
            elif eviction_policy.max_entries is not None:
                max_size = eviction_policy.max_entries
            if eviction_policy.max_bytes is not None:
                max_bytes = eviction_policy.max_bytes
        if on_evict is not None and not callable(on_evict):
            raise TypeError(f"on_evict must be callable, got {on_evict!r}")
        self.eviction_policy = eviction_policy
        hook = None if on_evict is None else _EvictHook(on_evict)
        lru = LRUStore(max_bytes, max_size, clock=clock, on_evict=hook)
        store = MemoryStore(lru) if hook is None else _HookedMemoryStore(lru, hook)
        super().__init__(
            store,
            AsyncMemoryStore(store),
            namespace=namespace,
            serializer=serializer,
            max_value_bytes=max_value_bytes,
            clock=clock,
        )

    def set(
        self,
        key: Any,
        value: Any,
        ttl: float | None = None,
        *,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store ``value`` under ``key`` (``ttl`` may be positional, as in the seed)."""
        self.set_many([(key, value)], ttl=ttl, tags=tags, layer=layer)


class _EvictHook:
    """Collects the keys an LRU store evicts to make room; reports them later, outside
    the store's lock (a callback may read the cache)."""

    def __init__(self, callback: Callable[[str], None]) -> None:
        self.callback = callback
        self.pending: list[str] = []

    def __call__(self, key: str, _entry: Entry, reason: str) -> None:
        if reason != "ttl":
            self.pending.append(key)


class _HookedMemoryStore(MemoryStore):
    """A `MemoryStore` that calls the ``on_evict`` callback after each write."""

    def __init__(self, store: LRUStore, hook: _EvictHook) -> None:
        super().__init__(store)
        self._hook = hook

    def set_many(self, items: Sequence[tuple[str, Record]]) -> None:
        try:
            super().set_many(items)
        finally:
            with self._lock:
                pending = bool(self._hook.pending)
            if pending:
                with self._lock:
                    keys, self._hook.pending = self._hook.pending, []
                for key in keys:
                    self._hook.callback(key)
