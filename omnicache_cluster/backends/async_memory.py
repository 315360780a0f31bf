"""`AsyncInMemoryBackend`: the async twin of `InMemoryBackend`, with the seed's names.

Every data method is a coroutine with the name of its blocking twin
(``await backend.get(key)``), as the seed's ``AsyncInMemoryBackend`` had it, for code
written for asyncio frameworks. Nothing waits on I/O, so each call runs inline on the
caller's event loop. `sync` is the blocking view of the same store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from omnicache_cluster.backends.memory import InMemoryBackend
from omnicache_cluster.core.codec import Serializer
from omnicache_cluster.core.scope import DEFAULT_LAYER
from omnicache_cluster.core.sentinel import MISS

__all__ = ["AsyncInMemoryBackend"]


class AsyncInMemoryBackend:
    """A bytes-bounded LRU cache in this process whose methods are coroutines.

    Takes the arguments of `InMemoryBackend`.

    Example:
        >>> import asyncio
        >>> async def demo():
        ...     b = AsyncInMemoryBackend(max_size=10_000)
        ...     await b.set("key", "value", ttl=60)
        ...     return await b.get("key"), await b.get("other")
        >>> asyncio.run(demo())
        ('value', MISS)
    """

    def __init__(
        self,
        max_size: int | None = None,
        eviction_policy: Any = None,
        on_evict: Callable[[str], None] | None = None,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        namespace: str = "omnicache",
        serializer: Serializer | None = None,
        max_value_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        _sync: InMemoryBackend | None = None,
    ) -> None:
        self._b = _sync or InMemoryBackend(
            max_size,
            eviction_policy,
            on_evict,
            max_bytes=max_bytes,
            namespace=namespace,
            serializer=serializer,
            max_value_bytes=max_value_bytes,
            clock=clock,
        )

    @property
    def sync(self) -> InMemoryBackend:
        """The blocking view of the same store and scope."""
        return self._b

    @property
    def tenant(self) -> str:
        """The tenant of this view's keys."""
        return self._b.tenant

    @property
    def key_namespace(self) -> str:
        """The namespace part of this view's keys."""
        return self._b.key_namespace

    def for_tenant(self, tenant: str) -> AsyncInMemoryBackend:
        """Return a view scoped to ``tenant`` over the same store."""
        return AsyncInMemoryBackend(_sync=self._b.for_tenant(tenant))

    def with_key_namespace(self, key_namespace: str) -> AsyncInMemoryBackend:
        """Return a view of the same store under another key namespace."""
        return AsyncInMemoryBackend(_sync=self._b.with_key_namespace(key_namespace))

    def key(self, key: Any, layer: str = DEFAULT_LAYER) -> str:
        """Return the stored key string of ``key`` in ``layer``."""
        return self._b.key(key, layer)

    async def get(self, key: Any, default: Any = MISS, *, layer: str = DEFAULT_LAYER) -> Any:
        """Return the value of ``key`` or ``default`` (`MISS`)."""
        return await self._b.aget(key, default, layer=layer)

    async def get_many(
        self, keys: Iterable[Any], default: Any = MISS, *, layer: str = DEFAULT_LAYER
    ) -> list[Any]:
        """Return the values of ``keys`` in order, ``default`` for each miss."""
        return await self._b.aget_many(keys, default, layer=layer)

    async def set(
        self,
        key: Any,
        value: Any,
        ttl: float | None = None,
        *,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store ``value`` under ``key`` (``ttl`` may be positional, as in the seed)."""
        await self._b.aset(key, value, ttl=ttl, tags=tags, layer=layer)

    async def set_many(
        self,
        items: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] | None = None,
        layer: str = DEFAULT_LAYER,
    ) -> None:
        """Store several values; every one is validated before any is stored."""
        await self._b.aset_many(items, ttl=ttl, tags=tags, layer=layer)

    async def delete(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Remove ``key``; return whether it was present."""
        return await self._b.adelete(key, layer=layer)

    async def delete_many(self, keys: Iterable[Any], *, layer: str = DEFAULT_LAYER) -> int:
        """Remove ``keys``; return how many were present."""
        return await self._b.adelete_many(keys, layer=layer)

    async def exists(self, key: Any, *, layer: str = DEFAULT_LAYER) -> bool:
        """Return whether ``key`` is present, without changing its recency."""
        return await self._b.aexists(key, layer=layer)

    async def invalidate(self, tag: str) -> int:
        """Remove every entry of this tenant tagged ``tag``; return how many."""
        return await self._b.ainvalidate(tag)

    async def clear(self, *, all_tenants: bool = False) -> int:
        """Remove this tenant's entries (or all, for the unscoped backend)."""
        return await self._b.aclear(all_tenants=all_tenants)

    async def stats(self) -> dict[str, Any]:
        """Return counters and levels (this tenant's only, for a scoped view)."""
        return await self._b.astats()

    async def close(self) -> None:
        """Nothing to release."""
        await self._b.aclose()
